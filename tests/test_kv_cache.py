import pytest
import torch
import torch.nn.functional as F

from encoding_world.gpt import GPT, GPTConfig
from encoding_world.kv_cache import KVCache, cache_bytes, causal_attention


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, d_model=32)).eval()


def test_cache_appends_and_counts_its_bytes():
    cache = KVCache(n_layer=3)
    assert cache.length == 0 and cache.nbytes() == 0
    for layer in range(3):
        k, v = cache.update(layer, torch.ones(2, 4, 5, 8), torch.ones(2, 4, 5, 8))
        assert k.shape == (2, 4, 5, 8)
    k, v = cache.update(0, torch.zeros(2, 4, 1, 8), torch.zeros(2, 4, 1, 8))
    assert k.shape == v.shape == (2, 4, 6, 8) and cache.length == 6
    assert cache.nbytes() == 4 * 2 * 4 * 8 * (6 + 5 + 5) * 2      # float32 keys and values
    assert cache_bytes(3, 4, 8, 5, 4, batch=2) == 2 * 3 * 4 * 8 * 5 * 4 * 2


def test_cache_refuses_bad_input():
    cache = KVCache(2)
    with pytest.raises(IndexError, match="layer 2"):
        cache.update(2, torch.ones(1, 1, 1, 4), torch.ones(1, 1, 1, 4))
    with pytest.raises(ValueError, match="batch, kv_heads"):
        cache.update(0, torch.ones(1, 1, 4), torch.ones(1, 1, 4))
    with pytest.raises(ValueError, match="n_layer"):
        KVCache(0)


def test_causal_attention_of_new_positions_is_the_last_rows_of_the_full_one():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 8)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(causal_attention(q[:, :, -3:], k, v), full[:, :, -3:], atol=1e-6)
    assert torch.allclose(causal_attention(q[:, :, -1:], k, v), full[:, :, -1:], atol=1e-6)
    with pytest.raises(ValueError, match="keys must include"):
        causal_attention(q, k[:, :, :3], v[:, :, :3])


def test_grouped_heads_share_keys_and_values():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    repeated = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    assert torch.allclose(causal_attention(q, k, v), repeated, atol=1e-6)
    with pytest.raises(ValueError, match="shared out"):
        causal_attention(torch.randn(1, 3, 5, 8), k, v)


def test_gpt_cache_path_equals_gpt_and_steps_equal_the_whole(model):
    ids = torch.randint(40, (2, 12))
    expected = model(ids)[0]
    with torch.no_grad():
        assert torch.equal(model(ids, cache=model.new_cache())[0], expected)   # empty cache: the same computation
        cache = model.new_cache()
        steps = [model(ids[:, :5], cache=cache)[0]]
        steps += [model(ids[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]
    assert cache.length == 12
    assert torch.allclose(torch.cat(steps, dim=1), expected, atol=1e-5)
    with pytest.raises(ValueError, match="12 cached \\+ 1 new positions are longer than block_size=12"):
        model(ids[:, :1], cache=cache)
