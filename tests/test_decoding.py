import math

import pytest
import torch

from encoding_world import decoding as D
from encoding_world.gpt import GPT, GPTConfig
from encoding_world.llama import LlamaGPT, LlamaGPTConfig

# 今天天气真__: 好 热 冷 差 糟 棒, already sorted by probability.
PROBS = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]


def logits_of(probs, dtype=torch.float64):
    return torch.tensor(probs, dtype=dtype).log()


def kept(logits):
    return torch.isfinite(logits).nonzero().flatten().tolist()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, d_model=32)).eval()


def test_greedy_takes_the_argmax_and_the_lowest_id_among_ties():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 1.0, 3.0]])
    assert D.greedy(logits).tolist() == [[1], [0]]


def test_temperature_divides_and_refuses_zero():
    z = logits_of(PROBS)
    assert torch.equal(D.apply_temperature(z, 2.0), z / 2.0)
    sharp = torch.softmax(D.apply_temperature(z, 0.01), -1)
    flat = torch.softmax(D.apply_temperature(z, 100.0), -1)
    assert sharp[0] > 1 - 1e-12 and torch.allclose(flat, torch.full((6,), 1 / 6, dtype=torch.float64), atol=0.01)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="greedy"):
            D.apply_temperature(z, bad)


def test_top_k_keeps_exactly_the_k_most_probable_renormalised():
    z = logits_of(PROBS)
    for k in range(1, 7):
        out = D.top_k_filter(z, k)
        assert kept(out) == list(range(k))
        p = torch.softmax(out, -1)
        expected = torch.tensor(PROBS[:k] + [0.0] * (6 - k), dtype=torch.float64) / sum(PROBS[:k])
        assert torch.allclose(p, expected, atol=1e-12)
    assert kept(D.top_k_filter(z, 100)) == list(range(6))          # k larger than the vocabulary
    assert kept(D.top_k_filter(z, 1, min_tokens_to_keep=3)) == [0, 1, 2]
    with pytest.raises(ValueError):
        D.top_k_filter(z, 0)


def test_top_k_keeps_every_token_tied_with_the_kth():
    z = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0])
    assert kept(D.top_k_filter(z, 2)) == [1, 2, 3]


def test_top_p_keeps_the_smallest_set_reaching_p():
    z = logits_of(PROBS)
    assert kept(D.top_p_filter(z, 0.7)) == [0, 1, 2]         # 0.65 < 0.7 <= 0.80
    assert kept(D.top_p_filter(z, 0.3)) == [0]
    assert kept(D.top_p_filter(z, 0.0)) == [0]                # at least one token
    assert kept(D.top_p_filter(z, 1.0)) == list(range(6))
    p = torch.softmax(D.top_p_filter(z, 0.7), -1)
    assert torch.allclose(p[:3], torch.tensor(PROBS[:3], dtype=torch.float64) / 0.8, atol=1e-12)


def test_top_p_boundary_reaching_p_exactly_stops_there():
    z = logits_of(PROBS)                                     # in float64, 0.4 + 0.25 == 0.65 exactly
    assert torch.softmax(z, -1).cumsum(-1)[1].item() == 0.65
    assert kept(D.top_p_filter(z, 0.65)) == [0, 1]
    assert kept(D.top_p_filter(z, 0.65 + 1e-9)) == [0, 1, 2]
    assert kept(D.top_p_filter(z, 0.65 - 1e-9)) == [0, 1]
    halves = logits_of([0.5, 0.25, 0.125, 0.125], torch.float32)   # exact in float32 too
    assert kept(D.top_p_filter(halves, 0.75)) == [0, 1]
    assert kept(D.top_p_filter(halves, 0.5, min_tokens_to_keep=3)) == [0, 1, 2]


def test_top_p_works_row_by_row_in_any_token_order():
    torch.manual_seed(0)
    perm = torch.randperm(6)
    z = logits_of(PROBS)[perm]
    batch = torch.stack([z, logits_of([1 / 6] * 6)])
    out = D.top_p_filter(batch, 0.7)
    assert sorted(perm[kept(out[0])].tolist()) == [0, 1, 2]
    assert kept(out[1]) == [0, 1, 2, 3, 4]                   # equal probabilities: lower ids first


def test_filters_equal_transformers_logits_warpers():
    lp = pytest.importorskip("transformers.generation.logits_process")
    torch.manual_seed(0)
    scores = torch.randn(64, 500) * 3
    ids = torch.zeros(64, 1, dtype=torch.long)
    assert torch.equal(D.apply_temperature(scores, 0.7), lp.TemperatureLogitsWarper(0.7)(ids, scores))
    for k in (1, 10, 500):
        assert torch.equal(D.top_k_filter(scores, k), lp.TopKLogitsWarper(k)(ids, scores))
    for p in (0.1, 0.5, 0.9, 1.0):
        assert torch.equal(D.top_p_filter(scores, p), lp.TopPLogitsWarper(p)(ids, scores))
    assert torch.equal(D.top_p_filter(scores, 0.2, 5), lp.TopPLogitsWarper(0.2, min_tokens_to_keep=5)(ids, scores))
    chain = lp.LogitsProcessorList([lp.TemperatureLogitsWarper(0.8), lp.TopKLogitsWarper(50),
                                    lp.TopPLogitsWarper(0.9)])
    assert torch.equal(D.filter_logits(scores, 0.8, 50, 0.9), chain(ids, scores))


def test_sample_next_draws_only_kept_tokens_with_renormalised_frequencies():
    z = logits_of(PROBS, torch.float32).expand(20000, 6)
    draws = D.sample_next(z, top_k=3, generator=torch.Generator().manual_seed(0)).flatten()
    counts = torch.bincount(draws, minlength=6) / len(draws)
    assert counts[3:].sum() == 0
    assert torch.allclose(counts[:3], torch.tensor([0.4, 0.25, 0.15]) / 0.8, atol=0.015)
    assert torch.equal(D.sample_next(z[:3], temperature=0), torch.zeros(3, 1, dtype=torch.long))


def test_decode_equals_gpt_generate_token_for_token(model):
    start = torch.randint(40, (3, 4), generator=torch.Generator().manual_seed(1))
    for temperature, top_k in ((1.0, None), (0.8, 5), (0, None)):
        ours = D.decode(model, start, 20, temperature, top_k, generator=torch.Generator().manual_seed(3))
        theirs = model.generate(start, 20, temperature, top_k, generator=torch.Generator().manual_seed(3))
        assert ours.shape == (3, 24) and torch.equal(ours, theirs)   # 24 > block_size: the window slides


def test_small_temperature_is_greedy_and_seeds_repeat(model):
    start = torch.zeros(4, 1, dtype=torch.long)
    greedy = D.decode(model, start, 10, temperature=0)
    cold = D.decode(model, start, 10, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy, cold)
    a, b, c = (D.decode(model, start, 10, top_p=0.9, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_decode_stops_when_every_row_has_stopped(model):
    start = torch.zeros(2, 1, dtype=torch.long)
    first = D.decode(model, start, 1, temperature=0)[0, 1].item()
    out = D.decode(model, start, 10, temperature=0, stop_id=first)
    assert out.shape == (2, 2)


def test_each_row_stops_at_its_own_stop_id_and_the_others_carry_on(model):
    """A row that writes stop_id is padded with it from then on; the other rows continue and
    get exactly the tokens they would get without a stop (every row takes part in each draw)."""
    start = torch.zeros(6, 1, dtype=torch.long)
    free = D.decode(model, start, 12, generator=torch.Generator().manual_seed(1))
    # A stop token that some rows write early and others never write in these 12 steps.
    written = [set(row[1:].tolist()) for row in free]
    stop = next(t for t in range(model.config.vocab_size)
                if 0 < sum(t in w for w in written) < len(written))
    out = D.decode(model, start, 12, generator=torch.Generator().manual_seed(1), stop_id=stop)
    assert out.shape == free.shape       # some row never stops, so all 12 steps run
    for row_free, row in zip(free, out):
        hits = (row_free[1:] == stop).nonzero()
        if len(hits) == 0:
            assert torch.equal(row, row_free)                       # never stopped: untouched
        else:
            cut = hits[0].item() + 1                                 # position of the first stop
            assert torch.equal(row[:cut + 1], row_free[:cut + 1])    # identical up to the stop ...
            assert (row[cut + 1:] == stop).all()                     # ... then only stop_id


def _llama():
    torch.manual_seed(0)
    return LlamaGPT(LlamaGPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=4, n_kv_head=2, d_model=32)).eval()


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_decode_gives_the_same_tokens_with_and_without_the_kv_cache(model, arch):
    model = model if arch == "gpt" else _llama()
    prompt = torch.randint(40, (3, 4), generator=torch.Generator().manual_seed(2))
    for new in (8, 30):                                   # inside the window, and well past block_size=12
        cached = D.decode(model, prompt, new, temperature=0)
        plain = D.decode(model, prompt, new, temperature=0, use_cache=False)
        assert cached.shape == (3, 4 + new) and torch.equal(cached, plain)
        sampled = [D.decode(model, prompt, new, top_k=10, generator=torch.Generator().manual_seed(1), use_cache=c)
                   for c in (True, False)]
        assert torch.equal(*sampled)
    long_prompt = torch.randint(40, (2, 20), generator=torch.Generator().manual_seed(3))   # longer than the window
    assert torch.equal(D.decode(model, long_prompt, 3, temperature=0),
                       D.decode(model, long_prompt, 3, temperature=0, use_cache=False))
    start = torch.zeros(2, 1, dtype=torch.long)
    stop = D.decode(model, start, 1, temperature=0)[0, 1].item()
    assert torch.equal(D.decode(model, start, 10, temperature=0, stop_id=stop),
                       D.decode(model, start, 10, temperature=0, stop_id=stop, use_cache=False))


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_decode_with_the_cache_feeds_one_token_per_step_until_the_window_slides(model, arch):
    model = model if arch == "gpt" else _llama()
    fed = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: fed.append(args[0].shape[1]), with_kwargs=True)
    try:
        D.decode(model, torch.zeros(1, 5, dtype=torch.long), 10, temperature=0)       # 5 + 10 > block_size 12
        assert fed == [5] + [1] * 7 + [12] * 2         # prefill, 7 steps to fill 12, then the whole window
        fed.clear()
        D.decode(model, torch.zeros(1, 5, dtype=torch.long), 3, temperature=0, use_cache=False)
        assert fed == [5, 6, 7]
    finally:
        hook.remove()
    with pytest.raises(TypeError, match="use_cache"):
        D.decode(model, torch.zeros(1, 1, dtype=torch.long), 1, use_cache="yes")


def test_completions_cut_at_the_first_stop():
    ids = torch.tensor([[9, 9, 1, 2, 0, 3], [9, 9, 4, 5, 6, 7]])
    assert D.completions(ids, 2, stop_id=0) == [[1, 2], [4, 5, 6, 7]]
    assert D.completions(ids, 2) == [[1, 2, 0, 3], [4, 5, 6, 7]]


def test_distinct_n():
    assert D.distinct_n(["abab"], 2) == 2 / 3                 # ab, ba, ab
    assert D.distinct_n(["ab", "ab"], 2) == 0.5
    assert D.distinct_n(["ab", "ba"], 2) == 1.0               # "ba" across the two texts is not counted
    assert D.distinct_n([[1, 2, 3], [3, 2, 1]], 1) == 0.5
    assert D.distinct_n(["a", ""], 2) == 0.0
    with pytest.raises(ValueError):
        D.distinct_n(["ab"], 0)


def test_average_log_likelihood_counts_generated_tokens_up_to_the_stop(model):
    ids = torch.tensor([[5, 6, 7, 0, 8], [5, 6, 9, 10, 11]])
    log_probs = torch.log_softmax(model(ids)[0], -1)
    lp = lambda row, t: log_probs[row, t - 1, ids[row, t]].item()   # noqa: E731
    expected = (lp(0, 2) + lp(0, 3) + lp(1, 2) + lp(1, 3) + lp(1, 4)) / 5   # row 0 stops at its 0
    assert math.isclose(D.average_log_likelihood(model, ids, 2, stop_id=0), expected, rel_tol=1e-5)
    everything = sum(lp(r, t) for r in (0, 1) for t in (2, 3, 4)) / 6
    assert math.isclose(D.average_log_likelihood(model, ids, 2), everything, rel_tol=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        D.average_log_likelihood(model, torch.zeros(1, 13, dtype=torch.long), 2)
