"""Three kinds of learning in miniature, written out in numpy.

- Unsupervised: k-means clustering (`kmeans_plusplus` to choose starting centres, `kmeans`
  for Lloyd's algorithm, `top_terms` to read a text cluster's centre).
- Reinforcement: a multi-armed bandit with Bernoulli arms (`epsilon_greedy`, `ucb1`,
  `regret`), and a small deterministic grid world (`GridWorld`, `value_iteration`,
  `q_learning`, `greedy_policy`).

Lesson 17 (17_kinds_of_learning) builds each piece step by step, checks k-means against
scikit-learn's `KMeans` given the same starting centres, and imports them from here.
Everything random takes a `numpy.random.Generator`, so a run repeats exactly.
"""
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------- k-means (unsupervised)

def squared_distances(X, centres, x_squared=None) -> np.ndarray:
    """Squared Euclidean distance of every row of X to every centre: [n_points, k].

    Uses |x − c|² = |x|² − 2 x·c + |c|²; pass x_squared (the rows' |x|²) to reuse it."""
    X = np.asarray(X, dtype=float)
    centres = np.asarray(centres, dtype=float)
    if x_squared is None:
        x_squared = (X * X).sum(axis=1)
    d = x_squared[:, None] - 2.0 * X @ centres.T + (centres * centres).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)      # rounding can make an exact 0 slightly negative


def kmeans_plusplus(X, k: int, rng: np.random.Generator) -> np.ndarray:
    """k starting centres chosen by k-means++ (Arthur and Vassilvitskii, 2007).

    The first centre is a row of X drawn uniformly; each next one is a row drawn with
    probability proportional to its squared distance to the nearest centre chosen so far,
    so the centres start spread out. Returns copies of the chosen rows, [k, n_features].
    """
    X = np.asarray(X, dtype=float)
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of points ({n}), got {k}")
    x_squared = (X * X).sum(axis=1)
    chosen = [int(rng.integers(n))]
    nearest = squared_distances(X, X[chosen], x_squared)[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        if total == 0:             # fewer distinct points than k: any remaining point will do
            probabilities = np.full(n, 1.0 / n)
        else:
            probabilities = nearest / total
        chosen.append(int(rng.choice(n, p=probabilities)))
        nearest = np.minimum(nearest, squared_distances(X, X[chosen[-1:]], x_squared)[:, 0])
    return X[chosen].copy()


@dataclass
class KMeansResult:
    labels: np.ndarray      # cluster of each point, [n_points]
    centres: np.ndarray     # [k, n_features]
    inertia: float          # sum of squared distances of the points to their centres
    n_iter: int             # assignment steps until nothing changed


def kmeans(X, centres, max_iter: int = 300) -> KMeansResult:
    """Lloyd's algorithm from the given starting centres, run until no point changes cluster.

    Alternate two steps: assign each point to its nearest centre; move each centre to the
    mean of its points. A cluster left with no points keeps its old centre (scikit-learn
    instead moves it to a far point; the two agree whenever no cluster empties).
    """
    X = np.asarray(X, dtype=float)
    centres = np.array(centres, dtype=float)
    x_squared = (X * X).sum(axis=1)
    labels = None
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        new_labels = squared_distances(X, centres, x_squared).argmin(axis=1)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for c in range(len(centres)):
            members = labels == c
            if members.any():
                centres[c] = X[members].mean(axis=0)
    return KMeansResult(labels, centres, inertia(X, labels, centres), n_iter)


def inertia(X, labels, centres) -> float:
    """Sum over points of the squared distance to the centre of their cluster."""
    X = np.asarray(X, dtype=float)
    centres = np.asarray(centres, dtype=float)
    return float(((X - centres[labels]) ** 2).sum())


def best_of_restarts(X, k: int, restarts: int, rng: np.random.Generator) -> KMeansResult:
    """k-means from `restarts` k-means++ starts; the run with the lowest inertia."""
    runs = [kmeans(X, kmeans_plusplus(X, k, rng)) for _ in range(restarts)]
    return min(runs, key=lambda run: run.inertia)


def top_terms(centres, terms, n: int = 8) -> list[list[str]]:
    """The n terms with the largest weight in each centre (ties broken by term order)."""
    terms = np.asarray(terms)
    return [terms[np.argsort(-np.asarray(c), kind="stable")[:n]].tolist() for c in centres]


# ---------------------------------------------------------------- bandits (reinforcement)

@dataclass
class BanditRun:
    arms: np.ndarray        # arm pulled at each step, [runs, steps]
    rewards: np.ndarray     # reward received at each step (0 or 1), [runs, steps]
    estimates: np.ndarray   # final estimate of each arm's mean reward, [runs, n_arms]
    counts: np.ndarray      # how often each arm was pulled, [runs, n_arms]


def _play(means, steps: int, runs: int, pull) -> BanditRun:
    """Play `runs` independent copies of a Bernoulli bandit whose arm a pays 1 with
    probability means[a], for `steps` pulls each. At step t, pull(t, estimates, counts)
    makes the policy's random draws, in the policy's own order, and returns the arm each run
    pulls and each run's reward coin. Each arm's estimate is the running mean of its
    rewards: Q ← Q + (r − Q) / n."""
    means = np.asarray(means, dtype=float)
    rows = np.arange(runs)
    estimates = np.zeros((runs, len(means)))
    counts = np.zeros((runs, len(means)), dtype=int)
    arms = np.empty((runs, steps), dtype=int)
    rewards = np.empty((runs, steps))
    for t in range(steps):
        arm, coin = pull(t, estimates, counts)
        reward = (coin < means[arm]).astype(float)
        counts[rows, arm] += 1
        estimates[rows, arm] += (reward - estimates[rows, arm]) / counts[rows, arm]
        arms[:, t], rewards[:, t] = arm, reward
    return BanditRun(arms, rewards, estimates, counts)


def epsilon_greedy(means, steps: int, epsilon: float, rng: np.random.Generator, runs: int = 1) -> BanditRun:
    """Play `runs` independent copies of a Bernoulli bandit whose arm a pays 1 with
    probability means[a], for `steps` pulls each.

    With probability epsilon explore (pull an arm uniformly at random), otherwise exploit
    (pull the arm with the best average reward so far; ties go to the lowest index). Each
    arm's estimate is the running mean of its rewards: Q ← Q + (r − Q) / n.
    Every step draws, in this order, one exploration coin, one random arm and one reward
    coin per run (all three even when unused), so a run repeats exactly from its seed.
    """
    n_arms = len(means)

    def pull(t, estimates, counts):
        explore = rng.random(runs) < epsilon
        random_arm = rng.integers(n_arms, size=runs)
        coin = rng.random(runs)
        return np.where(explore, random_arm, estimates.argmax(axis=1)), coin

    return _play(means, steps, runs, pull)


def ucb1(means, steps: int, rng: np.random.Generator, runs: int = 1, c: float = 2.0) -> BanditRun:
    """Upper confidence bound (UCB1, Auer et al., 2002): pull every arm once, then the arm
    with the largest  Q_a + sqrt(c · ln t / n_a)  (t = pulls so far), its average reward
    plus a bonus that is large for arms tried rarely: optimism about the uncertain arms
    replaces coin flips. Draws one reward coin per run and step."""
    n_arms = len(means)

    def pull(t, estimates, counts):
        coin = rng.random(runs)
        if t < n_arms:
            return np.full(runs, t), coin
        return (estimates + np.sqrt(c * np.log(t) / counts)).argmax(axis=1), coin

    return _play(means, steps, runs, pull)


def regret(means, arms) -> np.ndarray:
    """Cumulative (expected) regret after each step: the running sum of
    max(means) − means[arm pulled], what always pulling the best arm would have added.
    Same shape as `arms` ([steps] or [runs, steps]); sums along the last axis."""
    means = np.asarray(means, dtype=float)
    return np.cumsum(means.max() - means[np.asarray(arms)], axis=-1)


# ---------------------------------------------------------------- grid world (reinforcement)

ACTIONS = ("↑", "→", "↓", "←")
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))


class GridWorld:
    """A deterministic grid: `layout` rows of '.' (free), '#' (wall), 'S' (start),
    'G' (goal, reward +1, ends the episode) and 'X' (pit, reward −1, ends the episode).

    Every move costs `step_reward`; a move into a wall or off the grid leaves the agent
    where it is. States are the non-wall cells, numbered row by row.
    """

    def __init__(self, layout, step_reward: float = -0.04):
        self.layout = [list(row) for row in layout]
        self.step_reward = step_reward
        self.cells = [(r, c) for r, row in enumerate(self.layout) for c, ch in enumerate(row) if ch != "#"]
        self.index = {cell: i for i, cell in enumerate(self.cells)}
        starts = [self.index[cell] for cell in self.cells if self._at(cell) == "S"]
        if len(starts) != 1:
            raise ValueError("a grid world needs exactly one start 'S'")
        self.start = starts[0]
        self.terminal = np.array([self._at(cell) in "GX" for cell in self.cells])

    def _at(self, cell) -> str:
        return self.layout[cell[0]][cell[1]]

    @property
    def n_states(self) -> int:
        return len(self.cells)

    @property
    def n_actions(self) -> int:
        return len(ACTIONS)

    def step(self, state: int, action: int) -> tuple[int, float, bool]:
        """(next state, reward, episode over) for `action` taken in `state`."""
        if self.terminal[state]:
            raise ValueError("the episode is over in a terminal state")
        r, c = self.cells[state]
        dr, dc = _MOVES[action]
        target = (r + dr, c + dc)
        nxt = self.index.get(target, state)    # walls and the edge are not in the index
        kind = self._at(self.cells[nxt])
        reward = self.step_reward + (1.0 if kind == "G" else -1.0 if kind == "X" else 0.0)
        return nxt, reward, bool(self.terminal[nxt])

    def render(self, policy=None) -> str:
        """The grid as text; with a policy, each free cell shows its action's arrow."""
        rows = []
        for r, row in enumerate(self.layout):
            line = ""
            for c, ch in enumerate(row):
                s = self.index.get((r, c))
                line += ACTIONS[policy[s]] if policy is not None and s is not None and ch in ".S" else ch
            rows.append(line)
        return "\n".join(rows)


def value_iteration(world: GridWorld, gamma: float = 0.9, tol: float = 1e-12):
    """Optimal state values V* and action values Q* by repeating the Bellman optimality
    update  V(s) ← max_a [r(s, a) + γ V(s′)]  until it changes by less than tol.
    Returns (V [n_states], Q [n_states, n_actions]); terminal states have value 0."""
    V = np.zeros(world.n_states)
    transitions = {(s, a): world.step(s, a) for s in range(world.n_states) if not world.terminal[s]
                   for a in range(world.n_actions)}
    while True:
        Q = np.zeros((world.n_states, world.n_actions))
        for (s, a), (nxt, reward, done) in transitions.items():
            Q[s, a] = reward + (0.0 if done else gamma * V[nxt])
        new_V = np.where(world.terminal, 0.0, Q.max(axis=1))
        if np.abs(new_V - V).max() < tol:
            return new_V, Q
        V = new_V


def q_learning(world: GridWorld, episodes: int, rng: np.random.Generator, alpha: float = 0.5,
               gamma: float = 0.9, epsilon: float = 0.2, max_steps: int = 200):
    """Tabular Q-learning (Watkins, 1989): the agent only sees the rewards of the moves it
    makes. After each move from s with action a to s′ with reward r,
        Q(s, a) ← Q(s, a) + α [r + γ max_a′ Q(s′, a′) − Q(s, a)]
    (no γ term when s′ ends the episode). Moves are ε-greedy in Q, ties to the lowest index;
    each step draws one exploration coin and one random action, in that order.
    Returns (Q [n_states, n_actions], the total reward of each episode [episodes])."""
    Q = np.zeros((world.n_states, world.n_actions))
    returns = np.zeros(episodes)
    for episode in range(episodes):
        state = world.start
        for _ in range(max_steps):
            explore = rng.random() < epsilon
            random_action = int(rng.integers(world.n_actions))
            action = random_action if explore else int(Q[state].argmax())
            nxt, reward, done = world.step(state, action)
            target = reward if done else reward + gamma * Q[nxt].max()
            Q[state, action] += alpha * (target - Q[state, action])
            returns[episode] += reward
            state = nxt
            if done:
                break
    return Q, returns


def greedy_policy(Q) -> np.ndarray:
    """The action with the largest value in each state (ties to the lowest index)."""
    return np.asarray(Q).argmax(axis=1)
