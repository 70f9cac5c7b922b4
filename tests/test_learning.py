"""Unit tests for encoding_world.learning: k-means against scikit-learn, bandits, a grid world."""
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from encoding_world.learning import (
    ACTIONS,
    GridWorld,
    best_of_restarts,
    epsilon_greedy,
    greedy_policy,
    inertia,
    kmeans,
    kmeans_plusplus,
    q_learning,
    regret,
    squared_distances,
    top_terms,
    ucb1,
    value_iteration,
)


def blobs(seed=0, per_blob=40, spread=6.0):
    """Three well separated Gaussian blobs in 5 dimensions, and their true labels."""
    rng = np.random.default_rng(seed)
    centres = spread * np.array([[0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 1, 0]], dtype=float)
    X = np.vstack([c + rng.normal(size=(per_blob, 5)) for c in centres])
    return X, np.repeat(np.arange(3), per_blob)


# ---------------------------------------------------------------- k-means

def test_squared_distances_by_brute_force():
    rng = np.random.default_rng(1)
    X, C = rng.normal(size=(7, 4)), rng.normal(size=(3, 4))
    brute = np.array([[((x - c) ** 2).sum() for c in C] for x in X])
    assert np.allclose(squared_distances(X, C), brute, atol=1e-12)
    assert np.allclose(squared_distances(X, C, (X * X).sum(axis=1)), brute, atol=1e-12)
    assert (squared_distances(X, X).diagonal() >= 0).all()


def test_kmeans_plusplus_picks_distinct_rows_of_the_data():
    X, _ = blobs(spread=30.0)   # blobs so far apart that D² sampling all but surely visits each
    centres = kmeans_plusplus(X, 3, np.random.default_rng(0))
    assert centres.shape == (3, 5)
    rows = [int(np.flatnonzero((X == c).all(axis=1))[0]) for c in centres]
    assert len(set(rows)) == 3
    # spread out: one starting centre in each blob
    assert sorted(r // 40 for r in rows) == [0, 1, 2]
    with pytest.raises(ValueError):
        kmeans_plusplus(X, 0, np.random.default_rng(0))


def test_kmeans_plusplus_is_reproducible():
    X, _ = blobs()
    a = kmeans_plusplus(X, 3, np.random.default_rng(5))
    b = kmeans_plusplus(X, 3, np.random.default_rng(5))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_kmeans_equals_sklearn_from_the_same_start(seed, k):
    X, _ = blobs(seed)
    init = kmeans_plusplus(X, k, np.random.default_rng(seed))
    ours = kmeans(X, init)
    theirs = KMeans(n_clusters=k, init=init, n_init=1, tol=0, algorithm="lloyd").fit(X)
    assert np.array_equal(ours.labels, theirs.labels_)
    assert np.allclose(ours.centres, theirs.cluster_centers_, atol=1e-10)
    assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-10)


def test_kmeans_finds_the_blobs_and_does_not_touch_its_input():
    X, truth = blobs()
    init = kmeans_plusplus(X, 3, np.random.default_rng(0))
    before = init.copy()
    result = kmeans(X, init)
    assert np.array_equal(init, before)
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert result.inertia == pytest.approx(inertia(X, result.labels, result.centres))
    # the centres are the means of their points
    for c in range(3):
        assert np.allclose(result.centres[c], X[result.labels == c].mean(axis=0))


def test_kmeans_inertia_never_rises_with_more_iterations():
    X, _ = blobs(3)
    init = kmeans_plusplus(X, 4, np.random.default_rng(3))
    values = [kmeans(X, init, max_iter=i).inertia for i in range(1, 8)]
    assert all(b <= a + 1e-9 for a, b in zip(values, values[1:]))


def test_best_of_restarts_is_no_worse_than_one_start():
    X, _ = blobs(4)
    one = kmeans(X, kmeans_plusplus(X, 4, np.random.default_rng(0)))
    best = best_of_restarts(X, 4, 5, np.random.default_rng(0))
    assert best.inertia <= one.inertia + 1e-9   # the first restart is that same start


def test_top_terms():
    centres = np.array([[0.1, 0.5, 0.2], [0.3, 0.0, 0.3]])
    assert top_terms(centres, ["a", "b", "c"], n=2) == [["b", "c"], ["a", "c"]]


# ---------------------------------------------------------------- bandits

MEANS = np.array([0.2, 0.4, 0.5, 0.6, 0.8])


def test_epsilon_greedy_single_run_by_hand():
    """runs=1 equals a plain loop that draws the same three numbers each step."""
    rng = np.random.default_rng(7)
    run = epsilon_greedy(MEANS, 300, 0.1, np.random.default_rng(7))
    q, n = np.zeros(5), np.zeros(5)
    for t in range(300):
        explore, random_arm, coin = rng.random() < 0.1, int(rng.integers(5)), rng.random()
        arm = random_arm if explore else int(q.argmax())
        reward = float(coin < MEANS[arm])
        n[arm] += 1
        q[arm] += (reward - q[arm]) / n[arm]
        assert run.arms[0, t] == arm and run.rewards[0, t] == reward
    assert np.allclose(run.estimates[0], q) and np.array_equal(run.counts[0], n)


def test_estimates_are_the_average_reward_of_each_arm():
    run = epsilon_greedy(MEANS, 500, 0.2, np.random.default_rng(0), runs=3)
    for r in range(3):
        for arm in range(5):
            pulled = run.arms[r] == arm
            assert run.counts[r, arm] == pulled.sum()
            if pulled.any():
                assert run.estimates[r, arm] == pytest.approx(run.rewards[r, pulled].mean())


def test_bandits_learn_the_best_arm():
    eg = epsilon_greedy(MEANS, 3000, 0.1, np.random.default_rng(0), runs=100)
    ucb = ucb1(MEANS, 3000, np.random.default_rng(1), runs=100)
    # epsilon-greedy's long-run reward: (1 - eps) * best + eps * average arm
    assert eg.rewards[:, -1000:].mean() == pytest.approx(0.9 * 0.8 + 0.1 * MEANS.mean(), abs=0.02)
    assert ucb.rewards[:, -1000:].mean() == pytest.approx(0.8, abs=0.02)
    assert (eg.counts.argmax(axis=1) == 4).mean() > 0.8
    assert (ucb.counts.argmax(axis=1) == 4).all()


def test_greedy_gets_stuck_and_ucb_tries_every_arm_first():
    greedy = epsilon_greedy(MEANS, 200, 0.0, np.random.default_rng(0), runs=20)
    assert (greedy.counts.max(axis=1) >= 195).all()      # locks onto one arm almost at once
    ucb = ucb1(MEANS, 10, np.random.default_rng(0), runs=4)
    assert (ucb.arms[:, :5] == np.arange(5)).all()


def test_regret():
    arms = np.array([4, 0, 3, 4])
    assert np.allclose(regret(MEANS, arms), [0.0, 0.6, 0.8, 0.8])
    assert regret(MEANS, np.array([[4, 0], [1, 1]])).shape == (2, 2)


# ---------------------------------------------------------------- grid world

LAYOUT = ["...G",
          ".#.X",
          "S..."]


def test_grid_world_moves():
    world = GridWorld(LAYOUT)
    assert world.n_states == 11 and world.n_actions == len(ACTIONS) == 4
    start = world.start
    assert world.cells[start] == (2, 0)
    up, right, down, left = range(4)
    assert world.step(start, left) == (start, pytest.approx(-0.04), False)    # off the grid
    assert world.step(start, down) == (start, pytest.approx(-0.04), False)
    above = world.index[(1, 0)]
    assert world.step(above, right)[0] == above                              # into the wall
    goal_next = world.index[(0, 2)]
    nxt, reward, done = world.step(goal_next, right)
    assert world.cells[nxt] == (0, 3) and reward == pytest.approx(0.96) and done
    pit_above = world.index[(2, 3)]
    nxt, reward, done = world.step(pit_above, up)
    assert world.cells[nxt] == (1, 3) and reward == pytest.approx(-1.04) and done
    with pytest.raises(ValueError):
        world.step(nxt, up)
    with pytest.raises(ValueError):
        GridWorld(["..G"])


def test_value_iteration_satisfies_bellman_and_counts_steps():
    world = GridWorld(LAYOUT)
    V, Q = value_iteration(world, gamma=0.9)
    assert (V[world.terminal] == 0).all()
    for s in range(world.n_states):
        if world.terminal[s]:
            continue
        for a in range(4):
            nxt, reward, done = world.step(s, a)
            assert Q[s, a] == pytest.approx(reward + (0 if done else 0.9 * V[nxt]), abs=1e-9)
        assert V[s] == pytest.approx(Q[s].max())
    # from the start the goal is 5 moves away: 4 costs, then the goal's reward
    expected = sum(-0.04 * 0.9 ** i for i in range(5)) + 0.9 ** 4
    assert V[world.start] == pytest.approx(expected, abs=1e-9)


def test_q_learning_finds_an_optimal_policy():
    world = GridWorld(LAYOUT)
    V, Q_star = value_iteration(world)
    Q, returns = q_learning(world, 2000, np.random.default_rng(0))
    policy = greedy_policy(Q)
    for s in np.flatnonzero(~world.terminal):
        assert Q_star[s, policy[s]] == pytest.approx(V[s], abs=1e-9)
    # values are exact along the path the agent keeps taking, close in corners it rarely visits
    assert Q[world.start].max() == pytest.approx(V[world.start], abs=1e-9)
    assert np.abs(Q.max(axis=1) - V)[~world.terminal].max() < 0.05
    assert returns.shape == (2000,) and returns[-100:].mean() > returns[:10].mean()
    assert "G" in world.render(policy) and "↑" in world.render(policy)


def test_q_learning_is_reproducible():
    world = GridWorld(LAYOUT)
    a, _ = q_learning(world, 50, np.random.default_rng(3))
    b, _ = q_learning(world, 50, np.random.default_rng(3))
    assert np.array_equal(a, b)
