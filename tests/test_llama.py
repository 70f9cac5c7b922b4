import math

import pytest
import torch
import torch.nn.functional as F

from encoding_world import decoding, train
from encoding_world.gpt import GPTConfig
from encoding_world.llama import (
    Attention,
    LlamaGPT,
    LlamaGPTConfig,
    RMSNorm,
    SwiGLU,
    apply_rope,
    rope_cos_sin,
    rope_inverse_frequencies,
    swiglu_hidden_size,
    to_transformers,
)
from encoding_world.runtime import autocast


def small_config(**changes):
    return LlamaGPTConfig(**({"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 4, "n_kv_head": 2,
                              "d_model": 32} | changes))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return LlamaGPT(small_config()).eval()


def test_rmsnorm_equals_torch_rmsnorm():
    torch.manual_seed(0)
    x, weight = torch.randn(3, 5, 16) * 4 + 1, torch.randn(16)
    ours, theirs = RMSNorm(16, eps=1e-6), torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.copy_(weight)
        theirs.weight.copy_(weight)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    rms = (ours(x) / weight).pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-4)


def test_swiglu_width_follows_llama():
    assert swiglu_hidden_size(4096, 256) == 11008           # LLaMA-7B
    assert swiglu_hidden_size(128) == 352
    assert small_config().d_ff == swiglu_hidden_size(32)


def test_rope_rotates_pairs_and_keeps_lengths():
    cos, sin = rope_cos_sin(torch.arange(10), rope_inverse_frequencies(8))
    x = torch.randn(2, 10, 8)
    rotated = apply_rope(x, cos, sin)
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(rotated[:, 0], x[:, 0])            # position 0: no rotation
    # The first pair, (x_0, x_4), turns by one radian per position.
    angle = torch.tensor(3.0)
    expected = torch.stack([x[:, 3, 0] * angle.cos() - x[:, 3, 4] * angle.sin(),
                            x[:, 3, 0] * angle.sin() + x[:, 3, 4] * angle.cos()], dim=-1)
    assert torch.allclose(rotated[:, 3, [0, 4]], expected, atol=1e-5)
    with pytest.raises(ValueError, match="even"):
        rope_inverse_frequencies(7)


def test_rope_scores_depend_only_on_the_distance():
    torch.manual_seed(0)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    inv_freq = rope_inverse_frequencies(16).double()

    def score(m, n):
        cos, sin = rope_cos_sin(torch.tensor([m, n]), inv_freq)
        return (apply_rope(q, cos[0], sin[0]) @ apply_rope(k, cos[1], sin[1])).item()

    for m, n in ((5, 2), (9, 9), (3, 11)):
        for shift in (1, 17, 1000):
            assert math.isclose(score(m, n), score(m + shift, n + shift), rel_tol=0, abs_tol=1e-9)
    assert not math.isclose(score(5, 2), score(5, 3), abs_tol=1e-3)


def test_pieces_equal_transformers_llama():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                         rms_norm_eps=1e-6, max_position_embeddings=64)
    x = torch.randn(2, 7, 32)
    theirs_norm, ours_norm = llama.LlamaRMSNorm(32, eps=1e-6), RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        theirs_norm.weight.normal_()
    ours_norm.load_state_dict(theirs_norm.state_dict())
    assert torch.allclose(ours_norm(x), theirs_norm(x), atol=1e-6)

    theirs_mlp, ours_mlp = llama.LlamaMLP(config), SwiGLU(32, 48)
    ours_mlp.load_state_dict(theirs_mlp.state_dict(), strict=False)
    assert torch.allclose(ours_mlp(x), theirs_mlp(x), atol=1e-6)

    q, k = torch.randn(2, 4, 7, 8), torch.randn(2, 2, 7, 8)
    positions = torch.arange(3, 10)
    cos, sin = llama.LlamaRotaryEmbedding(config)(q, positions[None])
    theirs_q, theirs_k = llama.apply_rotary_pos_emb(q, k, cos, sin)
    ours_cos, ours_sin = rope_cos_sin(positions, rope_inverse_frequencies(8))
    assert torch.allclose(apply_rope(q, ours_cos, ours_sin), theirs_q, atol=1e-6)
    assert torch.allclose(apply_rope(k, ours_cos, ours_sin), theirs_k, atol=1e-6)


def test_model_equals_transformers_llama_with_the_same_weights(model):
    pytest.importorskip("transformers")
    ids = torch.randint(50, (2, 16))
    with torch.no_grad():
        assert torch.allclose(model(ids)[0], to_transformers(model)(ids).logits, atol=1e-5)
    untied = LlamaGPT(small_config(tie_embeddings=False, n_kv_head=4)).eval()
    with torch.no_grad():
        assert torch.allclose(untied(ids)[0], to_transformers(untied)(ids).logits, atol=1e-5)


def test_grouped_query_attention_equals_repeated_heads():
    torch.manual_seed(0)
    attn = Attention(32, n_head=4, n_kv_head=2).eval()
    x = torch.randn(2, 6, 32)
    cos, sin = rope_cos_sin(torch.arange(6), rope_inverse_frequencies(8))
    heads = lambda t, h: t.view(2, 6, h, 8).transpose(1, 2)   # noqa: E731
    q = apply_rope(heads(attn.q_proj(x), 4), cos, sin)
    k = apply_rope(heads(attn.k_proj(x), 2), cos, sin).repeat_interleave(2, dim=1)
    v = heads(attn.v_proj(x), 2).repeat_interleave(2, dim=1)
    expected = attn.out_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 6, 32))
    assert torch.allclose(attn(x, cos, sin), expected, atol=1e-6)
    assert attn.k_proj.weight.shape == (16, 32)               # half the key/value weights of 4 heads


def test_parameters_counted_by_hand(model):
    c = model.config
    kv = c.n_kv_head * c.head_dim
    by_hand = c.vocab_size * c.d_model + c.n_layer * (2 * c.d_model * c.d_model + 2 * c.d_model * kv
                                                       + 3 * c.d_model * c.d_ff + 2 * c.d_model) + c.d_model
    assert model.num_parameters() == model.num_parameters(non_embedding=False) == by_hand
    assert model.lm_head.weight is model.token_embedding.weight
    assert model.flops_per_token() == 6 * by_hand + 6 * c.n_layer * c.block_size * c.d_model
    assert "inv_freq" not in model.state_dict()


def test_future_tokens_never_change_earlier_logits(model):
    x = torch.randint(50, (1, 16))
    changed = x.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 50
    with torch.no_grad():
        assert torch.equal(model(x)[0][:, :10], model(changed)[0][:, :10])


def test_cached_steps_equal_the_whole_and_decode_gives_the_same_tokens_with_and_without(model):
    ids = torch.randint(50, (2, 16))
    with torch.no_grad():
        cache = model.new_cache()
        steps = [model(ids[:, :6], cache=cache)[0]] + [model(ids[:, t:t + 1], cache=cache)[0] for t in range(6, 16)]
        assert torch.allclose(torch.cat(steps, dim=1), model(ids)[0], atol=1e-5)
    assert cache.nbytes() == 2 * 2 * 2 * 8 * 16 * 4 * 2      # layers · kv heads · head_dim · length · 4 bytes · batch 2
    for new in (6, 25):
        assert torch.equal(decoding.decode(model, ids[:, :4], new, temperature=0),
                           decoding.decode(model, ids[:, :4], new, temperature=0, use_cache=False))
    with pytest.raises(ValueError, match="block_size=16"):
        model(ids[:, :1], cache=cache)


def test_config_checks_and_gpt_twin():
    with pytest.raises(ValueError, match="n_kv_head"):
        small_config(n_kv_head=3)
    with pytest.raises(ValueError, match="even"):
        small_config(n_head=32, n_kv_head=None)
    twin = LlamaGPTConfig.from_gpt_config(GPTConfig(vocab_size=50, block_size=16, n_layer=3, n_head=2, d_model=24),
                                          n_kv_head=1)
    assert (twin.n_layer, twin.n_head, twin.n_kv_head, twin.d_model, twin.block_size) == (3, 2, 1, 24, 16)
    assert LlamaGPTConfig(**twin.to_dict()) == twin


def test_refuses_bad_ids_like_gpt(model):
    with pytest.raises(ValueError, match="token_ids"):
        model(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="no token"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have the shape"):
        model(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))


def test_trains_with_the_books_training_pieces_also_under_bf16():
    torch.manual_seed(0)
    config = train.CONFIGS["tiny"]
    model = LlamaGPT(LlamaGPTConfig.from_gpt_config(config.model_config()))
    optimizer = train.make_optimizer(model.parameters(), config.learning_rate, config.weight_decay)
    data = torch.randint(0, 8, (2000,)) * 3                   # a stream with little to learn but its alphabet
    x = torch.stack([data[i:i + 32] for i in range(0, 512, 32)])
    y = torch.stack([data[i + 1:i + 33] for i in range(0, 512, 32)])
    first = model(x, y)[1].item()
    for _ in range(30):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x, y)[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert math.isfinite(loss.item()) and model(x, y)[1].item() < first - 1.0
    with autocast("cpu"):
        assert model(x, y)[0].dtype in (torch.float32, torch.bfloat16, torch.float16)
