"""The count-based n-gram language models (encoding_world.ngram) behave as documented."""
import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from encoding_world import ngram
from encoding_world.ngram import NGramCounts, NGramLM

SMOOTHED = [("add-k", {"k": 0.5}), ("jelinek-mercer", {"weights": None}), ("kneser-ney", {"discounts": None})]


def random_poems(n_poems=300, vocab_size=7, seed=0):
    """A stream of END(0)-separated "poems" over ids 1 … vocab_size − 1, with some structure."""
    rng = np.random.default_rng(seed)
    ids = []
    for _ in range(n_poems):
        x = int(rng.integers(1, vocab_size))
        for _ in range(int(rng.integers(3, 9))):
            ids.append(x)
            x = x % (vocab_size - 1) + 1 if rng.random() < 0.6 else int(rng.integers(1, vocab_size))
        ids.append(0)
    return np.array(ids)


def all_models(stream, vocab_size, orders=(0, 1, 2, 3)):
    models = []
    for order in orders:
        models.append(NGramLM(order, vocab_size, "mle").fit(stream))
        models.append(NGramLM(order, vocab_size, "add-k", k=0.5).fit(stream))
        models.append(NGramLM(order, vocab_size, "add-k").fit(stream))            # k tuned
        models.append(NGramLM(order, vocab_size, "jelinek-mercer").fit(stream))   # weights tuned
        models.append(NGramLM(order, vocab_size, "kneser-ney").fit(stream))       # discounts tuned
    return models


def test_mle_bigram_equals_counts_by_hand():
    # Stream "a b a c END a b" with ids END=0, a=1, b=2, c=3; it starts as if after END.
    stream = torch.tensor([1, 2, 1, 3, 0, 1, 2])
    lm = NGramLM(2, 4, "mle").fit(stream)
    # Pairs inside the stream: a→b, b→a, a→c, c→END, END→a, a→b. After a: b twice, c once;
    # after END: a once; after b: a once; after c: END once. (The first token is scored from
    # the context END, as if the stream followed a poem's end.)
    expected = {(1, 2): 2 / 3, (1, 3): 1 / 3, (1, 1): 0.0, (0, 1): 1.0, (2, 1): 1.0, (3, 0): 1.0, (2, 3): 0.0}
    for (prev, nxt), p in expected.items():
        assert lm.next_token_distribution([prev])[nxt] == pytest.approx(p, abs=1e-15)
    # The loss of the training stream itself, by hand: −(1/7) Σ ln P.
    by_hand = -(math.log(1) + math.log(2 / 3) + math.log(1) + math.log(1 / 3) + math.log(1) + math.log(1)
                + math.log(2 / 3)) / 7
    assert lm.cross_entropy(stream) == pytest.approx(by_hand, abs=1e-12)
    # Unigram MLE: counts / length.
    uni = NGramLM(1, 4, "mle").fit(stream).next_token_distribution()
    assert np.allclose(uni, np.array([1, 3, 2, 1]) / 7, atol=1e-15)


def test_counts_are_the_ngrams_inside_the_stream():
    stream = random_poems()
    counts = NGramCounts(stream, 4, 7)
    for k in range(1, 5):
        table = counts.table(k)
        assert table.counts.sum() == len(stream) - k + 1
        assert table.totals.sum() == len(stream) - k + 1
        assert np.all(np.diff(table.keys) > 0)
    trigram = (int(stream[5]) * 7 + int(stream[6])) * 7 + int(stream[7])
    by_loop = sum(tuple(stream[i:i + 3]) == tuple(stream[5:8]) for i in range(len(stream) - 2))
    assert counts.table(3).counts[np.searchsorted(counts.table(3).keys, trigram)] == by_loop
    # Continuation counts: the number of distinct tokens seen in front of a bigram.
    cont = counts.table(2, continuation=True)
    pairs = list(zip(stream[:-2], stream[1:-1], stream[2:]))
    for key, c in zip(cont.keys, cont.counts):
        a, b = divmod(int(key), 7)
        assert c == len({t[0] for t in pairs if t[1:] == (a, b)})


def test_probabilities_sum_to_one_for_every_context():
    V = 5
    stream = random_poems(120, V, seed=1)
    for lm in all_models(stream, V):
        width = max(lm.order - 1, 0)
        contexts = [list(c) for c in itertools.product(range(V), repeat=width)] or [[]]
        probs = lm.next_token_distributions(contexts)
        assert probs.shape == (len(contexts), V)
        assert np.all(probs >= 0), lm
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-12), lm
        if lm.smoothing != "mle":
            assert np.all(probs > 0), lm


def test_log_prob_agrees_with_next_token_distribution():
    V = 7
    train, held = ngram.split_heldout(random_poems(400, V, seed=2), every=5)
    for lm in all_models(train, V):
        lp = lm.log_prob(held[:60])
        for t in range(60):
            p = lm.next_token_distribution(held[:t])[held[t]]
            assert lp[t] == pytest.approx(math.log(p) if p > 0 else -math.inf, abs=1e-12), (lm, t)


def test_unseen_ngram_is_infinite_for_mle_and_finite_with_smoothing():
    V = 6
    train = np.array([1, 2, 3, 0, 1, 2, 4, 0, 2, 3, 0] * 20)
    test = np.array([1, 2, 5, 0])                     # "1 2 5": 5 never follows 2 in training
    mle = NGramLM(3, V, "mle").fit(train)
    assert mle.next_token_distribution([1, 2])[5] == 0.0
    assert mle.cross_entropy(test) == math.inf
    with np.errstate(all="raise"):                    # and no warnings on the way
        assert NGramLM(3, V, "mle").fit(train).log_prob(test)[2] == -math.inf
    for smoothing, params in SMOOTHED:
        lm = NGramLM(3, V, smoothing, **{k: v for k, v in params.items() if v is not None}).fit(train)
        assert lm.next_token_distribution([1, 2])[5] > 0, smoothing
        assert math.isfinite(lm.cross_entropy(test)), smoothing


def test_mle_unseen_context_is_uniform():
    lm = NGramLM(2, 4, "mle").fit([1, 2, 1, 2])
    assert np.allclose(lm.next_token_distribution([3]), 0.25)


def test_uniform_model_loss_is_ln_vocab_size():
    stream = random_poems()
    for V in (7, 3000):
        lm = NGramLM(0, V).fit(stream)
        assert lm.cross_entropy(stream) == pytest.approx(math.log(V), abs=1e-12)
        assert lm.perplexity(stream) == pytest.approx(V, rel=1e-12)
    # Add-k with a huge k tends to the uniform model.
    huge = NGramLM(2, 7, "add-k", k=1e9).fit(stream)
    assert huge.cross_entropy(stream) == pytest.approx(math.log(7), abs=1e-6)


def test_add_k_formula():
    stream = [1, 2, 1, 3, 0, 1, 2]
    lm = NGramLM(2, 4, "add-k", k=0.5).fit(stream)
    # After a (id 1): b twice, c once, 3 pairs in all: (c + k) / (3 + 4k).
    assert np.allclose(lm.next_token_distribution([1]), np.array([0.5, 0.5, 2.5, 1.5]) / 5, atol=1e-15)


def test_kneser_ney_bigram_by_hand():
    stream = [1, 2, 1, 3, 0, 1, 2]
    D1, D2 = 0.4, 0.7
    lm = NGramLM(2, 4, "kneser-ney", discounts=[D1, D2]).fit(stream)
    # Continuation counts: distinct tokens seen before each token, in the pairs inside the stream.
    # before END: {c}; before a: {END, b}; before b: {a}; before c: {a}  → total 5, 4 types.
    cont = np.array([1, 2, 1, 1])
    p1 = (np.maximum(cont - D1, 0) + D1 * 4 / 4) / 5
    # After a: b twice, c once (3 in all, 2 distinct).
    counts_after_a = np.array([0, 0, 2, 1])
    p2 = (np.maximum(counts_after_a - D2, 0) + D2 * 2 * p1) / 3
    assert np.allclose(lm.next_token_distribution([1]), p2, atol=1e-15)


def test_perplexity_is_exp_cross_entropy():
    stream = random_poems()
    lm = NGramLM(2, 7, "kneser-ney").fit(stream)
    assert lm.perplexity(stream) == pytest.approx(math.exp(lm.cross_entropy(stream)), rel=1e-12)


def test_heldout_split_takes_every_20th_poem():
    poems = [[i % 5 + 1] * (i % 3 + 1) + [0] for i in range(45)]
    stream = np.concatenate(poems)
    part, held = ngram.split_heldout(stream, every=20)
    assert np.array_equal(held, np.concatenate([poems[19], poems[39]]))
    assert np.array_equal(part, np.concatenate([p for i, p in enumerate(poems) if i not in (19, 39)]))


def test_tuned_hyper_parameters_improve_the_heldout_loss():
    V = 7
    stream = random_poems(600, V, seed=3)
    part, held = ngram.split_heldout(stream)
    tuned = NGramLM(3, V, "kneser-ney").fit(stream)
    assert all(0 < d <= 1 for d in tuned.discounts)
    # The discounts were chosen on (part → held): they beat other discounts there.
    chosen = NGramLM(3, V, "kneser-ney", discounts=tuned.discounts).fit(part).cross_entropy(held)
    for other in ([0.5] * 3, [0.9] * 3, [0.1] * 3):
        assert chosen <= NGramLM(3, V, "kneser-ney", discounts=other).fit(part).cross_entropy(held) + 1e-9
    jm = NGramLM(3, V, "jelinek-mercer").fit(stream)
    assert all(0 <= w <= 1 for w in jm.weights)
    addk = NGramLM(2, V, "add-k").fit(stream)
    assert 1e-5 <= addk.k <= 10


def test_fit_models_equals_separate_fits():
    V = 7
    stream = random_poems(300, V, seed=4)
    test = random_poems(30, V, seed=5)
    models = ngram.fit_models(stream, V, [1, 2, 3], ("add-k", "jelinek-mercer", "kneser-ney"))
    for (smoothing, order), lm in models.items():
        alone = NGramLM(order, V, smoothing).fit(stream)
        assert lm.cross_entropy(test) == pytest.approx(alone.cross_entropy(test), abs=1e-12)


def test_higher_order_helps_on_structured_data():
    V = 7
    stream = random_poems(800, V, seed=6)
    part, held = ngram.split_heldout(stream, every=4)
    losses = [NGramLM(n, V, "kneser-ney").fit(part).cross_entropy(held) for n in (0, 1, 2)]
    # The data are made by a first-order rule (x → x + 1 more often than not): the bigram
    # model finds it, the uniform and unigram models cannot.
    assert losses[0] == pytest.approx(math.log(V)) and losses[2] < losses[1] - 0.1 and losses[2] < losses[0] - 0.1


def test_sample_is_reproducible_and_stops_at_end():
    V = 7
    lm = NGramLM(3, V, "kneser-ney").fit(random_poems(300, V))
    a = lm.sample(5, np.random.default_rng(0), max_new_tokens=30, prompt=[1])
    b = lm.sample(5, np.random.default_rng(0), max_new_tokens=30, prompt=[1])
    assert a == b and len(a) == 5
    for s in a:
        assert len(s) <= 30 and all(1 <= t < V for t in s)   # END (0) stops a sample and is not kept


def test_best_ngram_picks_the_lowest_validation_loss():
    V = 7
    train, val = ngram.split_heldout(random_poems(600, V, seed=7), every=10)
    data = SimpleNamespace(vocab=list(range(V)), train=torch.from_numpy(train), val=torch.from_numpy(val))
    best = ngram.best_ngram(data, orders=[1, 2, 3])
    assert best["val_loss"] == min(best["val_losses"].values())
    assert best["model"].order == best["order"]
    assert ngram.best_ngram_val_loss(data, orders=[1, 2, 3]) == pytest.approx(best["val_loss"], abs=1e-12)
    models = ngram.fit_models(data.train, V, [1, 2, 3], ("add-k", "kneser-ney"))
    reused = ngram.best_ngram(data, orders=[1, 2, 3], models=models)
    assert reused["val_losses"] == pytest.approx(best["val_losses"], abs=1e-12)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="64-bit"):
        NGramLM(6, 3000)
    assert ngram.max_order(3000) == 5
    with pytest.raises(ValueError, match="smoothing"):
        NGramLM(2, 10, "laplace")
    with pytest.raises(ValueError, match="ids must lie"):
        NGramLM(2, 3).fit([0, 1, 3])
    with pytest.raises(RuntimeError, match="fit"):
        NGramLM(2, 3).cross_entropy([0, 1])
    with pytest.raises(ValueError, match="one number per order"):
        NGramLM(3, 5, "kneser-ney", discounts=[0.5])
