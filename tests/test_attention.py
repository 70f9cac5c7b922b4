"""The attention, mask and Transformer-block pieces against PyTorch's own implementations."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encoding_world.attention import MultiHeadAttention, scaled_dot_product_attention, sinusoidal_positional_encoding
from encoding_world.masks import attention_mask, causal_mask, padding_mask
from encoding_world.transformer import Decoder, Encoder, TokenEmbedding, TransformerBlock


@pytest.fixture(autouse=True)
def float64():
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_causal_mask_allows_only_the_past():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.tolist() == [[i >= j for j in range(4)] for i in range(4)]
    with pytest.raises(ValueError, match="at least 1"):
        causal_mask(0)


def test_padding_and_combined_masks():
    ids = torch.tensor([[5, 6, 0, 0], [7, 8, 9, 0]])
    pad = padding_mask(ids, pad_id=0)
    assert pad.tolist() == [[True, True, False, False], [True, True, True, False]]
    both = attention_mask(pad, causal=True)
    assert both.shape == (2, 1, 4, 4)
    assert torch.equal(both[1, 0], causal_mask(4) & pad[1])
    assert attention_mask(None, causal=False) is None
    with pytest.raises(ValueError, match="boolean"):
        attention_mask(ids, causal=False)
    with pytest.raises(ValueError, match=r"\[batch, seq_len\]"):
        padding_mask(ids[0], pad_id=0)


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_equals_pytorch(masked):
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 4)
    mask = torch.rand(5, 6) > 0.3 if masked else None
    if masked:
        mask[:, 0] = True  # every query keeps at least one key
    ours, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-12)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 5))
    if masked:
        assert (weights[..., ~mask] == 0).all()


def test_sdpa_fully_masked_query_gives_zeros_not_nan():
    q = k = v = torch.randn(1, 3, 4)
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    assert not out.isnan().any() and (out[0, 1] == 0).all() and (weights[0, 1] == 0).all()


def test_sdpa_rejects_bad_masks_and_shapes():
    q = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="does not broadcast"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(5, 5))
    with pytest.raises(ValueError, match="d_k"):
        scaled_dot_product_attention(q, torch.randn(2, 5, 7), q)


@pytest.mark.parametrize("need_weights", [False, True])
def test_multi_head_attention_equals_torch(need_weights):
    torch_mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    ours = MultiHeadAttention(16, 4).load_from_torch(torch_mha).eval()
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mask = causal_mask(5)
    expected, expected_weights = torch_mha(x, x, x, attn_mask=~mask, average_attn_weights=False)
    got, weights = ours(x, mask=mask, need_weights=need_weights)
    assert torch.allclose(got, expected, atol=1e-12)
    if need_weights:
        assert torch.allclose(weights, expected_weights, atol=1e-12)
    cross, _ = torch_mha(x, memory, memory)
    assert torch.allclose(ours(x, context=memory)[0], cross, atol=1e-12)


def test_multi_head_attention_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"\[batch, len, 8\]"):
        mha(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="does not broadcast"):
        mha(torch.randn(2, 5, 8), mask=causal_mask(4))


def test_gradients_reach_every_parameter():
    block = TransformerBlock(16, 4, cross_attention=True)
    out = block(torch.randn(2, 5, 16), mask=causal_mask(5), memory=torch.randn(2, 3, 16))
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


@pytest.mark.parametrize("decoder", [False, True])
def test_block_equals_torch_transformer_layer(decoder):
    kwargs = dict(d_model=16, nhead=4, dim_feedforward=32, dropout=0.0, activation="gelu",
                  batch_first=True, norm_first=True)
    layer = (nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer)(**kwargs).eval()
    block = TransformerBlock(16, 4, 32, cross_attention=decoder).load_from_torch(layer).eval()
    x, memory, mask = torch.randn(3, 6, 16), torch.randn(3, 4, 16), causal_mask(6)
    expected = layer(x, memory, tgt_mask=~mask) if decoder else layer(x, src_mask=~mask)
    got = block(x, mask=mask, memory=memory if decoder else None)
    assert torch.allclose(got, expected, atol=1e-12)


def test_causal_decoder_never_looks_ahead():
    decoder = Decoder(2, 16, 4, cross_attention=False).eval()
    x = torch.randn(1, 6, 16)
    changed = x.clone()
    changed[:, 4:] = torch.randn(1, 2, 16)
    mask = causal_mask(6)
    assert torch.equal(decoder(x, mask=mask)[:, :4], decoder(changed, mask=mask)[:, :4])


def test_padding_never_changes_real_tokens():
    encoder = Encoder(2, 16, 4).eval()
    x = torch.randn(1, 3, 16)
    padded = torch.cat([x, torch.randn(1, 2, 16)], dim=1)
    keys = torch.tensor([[True, True, True, False, False]])
    out = encoder(padded, mask=attention_mask(keys))
    assert torch.allclose(out[:, :3], encoder(x), atol=1e-12)


def test_block_misuse_is_reported():
    with pytest.raises(ValueError, match="pass the encoder output as memory"):
        TransformerBlock(8, 2, cross_attention=True)(torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match="without cross_attention"):
        TransformerBlock(8, 2)(torch.randn(1, 2, 8), memory=torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match="longer than block_size"):
        TokenEmbedding(10, 8, block_size=4)(torch.zeros(1, 5, dtype=torch.long))


def test_sinusoidal_encoding_values_and_distinct_positions():
    pe = sinusoidal_positional_encoding(50, 8)
    assert pe.shape == (50, 8)
    assert torch.allclose(pe[0], torch.tensor([0.0, 1.0] * 4))
    assert torch.isclose(pe[3, 2], torch.sin(torch.tensor(3 / 10000 ** (2 / 8))))
    assert torch.cdist(pe, pe).add(torch.eye(50)).min() > 0.1  # no two positions coincide
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positional_encoding(10, 7)


def test_causal_flag_equals_an_explicit_causal_mask():
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    explicit = mha(x, mask=causal_mask(6))[0]
    assert torch.allclose(mha(x, causal=True)[0], explicit, atol=1e-12)
    assert torch.allclose(mha(x, causal=True, need_weights=True)[0], explicit, atol=1e-12)
    keys = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    combined = mha(x, mask=attention_mask(keys, causal=True))[0]
    assert torch.allclose(mha(x, mask=attention_mask(keys), causal=True)[0], combined, atol=1e-12)
    block = TransformerBlock(16, 4).eval()
    assert torch.allclose(block(x, causal=True), block(x, mask=causal_mask(6)), atol=1e-12)


def test_forward_with_weights_matches_forward_and_returns_each_blocks_weights():
    decoder = Decoder(2, 16, 4, cross_attention=True).eval()
    x, memory, mask = torch.randn(2, 5, 16), torch.randn(2, 3, 16), causal_mask(5)
    out, self_weights, cross_weights = decoder.forward_with_weights(x, mask=mask, memory=memory)
    assert torch.allclose(out, decoder(x, mask=mask, memory=memory), atol=1e-12)
    assert len(self_weights) == len(cross_weights) == 2
    assert self_weights[0].shape == (2, 4, 5, 5) and cross_weights[0].shape == (2, 4, 5, 3)
    assert (self_weights[1][..., ~mask] == 0).all()
