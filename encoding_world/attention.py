"""Scaled dot-product attention, multi-head attention and sinusoidal positional encoding.

Written out step by step in lesson 8, which checks them against
`torch.nn.functional.scaled_dot_product_attention` and `torch.nn.MultiheadAttention`.
Masks follow encoding_world.masks: True where attention is allowed.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int, check_tensor, show
from .masks import causal_mask


def _check_mask(mask: torch.Tensor, scores_shape: torch.Size) -> None:
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean (True = may attend), got {mask.dtype}")
    try:
        torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the attention "
                         f"scores' shape {tuple(scores_shape)} ([..., query_len, key_len])") from None


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p: float = 0.0):
    """softmax(q·kᵀ / √d_k + mask) · v, returning (output, attention weights).

    q: [..., query_len, d_k], k: [..., key_len, d_k], v: [..., key_len, d_v].
    A query whose every key is masked gets weights of 0 (not NaN) and an output of 0.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x, min_dims=2)
        if not x.is_floating_point() or x.dtype != q.dtype:
            raise TypeError(f"q, k and v must be floating-point tensors of one dtype, got q {q.dtype}, "
                            f"k {k.dtype} and v {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share their last dimension d_k, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of positions, got {k.shape[-2]} and {v.shape[-2]}")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch, head) dimensions of q {list(q.shape)}, k {list(k.shape)} and "
                         f"v {list(v.shape)} do not broadcast ([..., len, d])") from None
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        _check_mask(mask, scores.shape)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.nan_to_num(0.0)  # rows with no allowed key: -inf everywhere → NaN → 0
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project to n_head subspaces, attend in each, concatenate, project.

    forward(x, context=None, mask=None, need_weights=False, causal=False): self-attention
    over x, or cross-attention from x to `context` (an encoder's output). x: [batch,
    query_len, d_model]; mask broadcastable to [batch, n_head, query_len, key_len];
    `causal=True` adds the causal mask without building it (the fused kernel skips the
    masked half of the work).
    Without need_weights it calls PyTorch's fused kernel (FlashAttention on a GPU); with it,
    the explicit computation above, which also returns the weights [batch, heads, q, k].
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.d_model, self.n_head, self.d_head = d_model, n_head, d_model // n_head
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def _split_heads(self, x):  # [batch, len, d_model] -> [batch, heads, len, d_head]
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_head, self.d_head).transpose(1, 2)

    def forward(self, x, context=None, mask=None, need_weights: bool = False, causal: bool = False):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be [batch, len, {self.d_model}], got {show(x)}")
        if context is not None and (not isinstance(context, torch.Tensor) or context.dim() != 3
                                    or context.shape[0] != x.shape[0] or context.shape[-1] != self.d_model):
            raise ValueError(f"context must be [batch, key_len, {self.d_model}] with the batch of x "
                             f"({x.shape[0]}), got {show(context)}")
        context = x if context is None else context
        q = self._split_heads(self.q_proj(x))
        k = self._split_heads(self.k_proj(context))
        v = self._split_heads(self.v_proj(context))
        dropout_p = self.dropout if self.training else 0.0
        if causal and (need_weights or mask is not None):
            allowed = causal_mask(q.shape[2], device=q.device)
            mask = allowed if mask is None else mask & allowed
            causal = False
        if need_weights:
            out, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=dropout_p)
        else:
            if mask is not None:
                _check_mask(mask, torch.Size((q.shape[0], self.n_head, q.shape[2], k.shape[2])))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)
            weights = None
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.d_model)
        return self.out_proj(out), weights

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy the weights of a torch.nn.MultiheadAttention of the same size into this module."""
        if mha.embed_dim != self.d_model or mha.num_heads != self.n_head or not mha._qkv_same_embed_dim:
            raise ValueError("the torch module must have the same d_model and n_head, and packed q/k/v weights")
        for proj, weight in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_weight.chunk(3)):
            proj.weight.copy_(weight)
        if mha.in_proj_bias is not None:
            for proj, bias in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_bias.chunk(3)):
                proj.bias.copy_(bias)
        self.out_proj.load_state_dict(mha.out_proj.state_dict())
        return self


def sinusoidal_positional_encoding(block_size: int, d_model: int) -> torch.Tensor:
    """[block_size, d_model]: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same)."""
    check_int("block_size", block_size, low=1)
    if d_model % 2:
        raise ValueError(f"d_model must be even for sine/cosine pairs, got {d_model}")
    position = torch.arange(block_size, dtype=torch.float64)[:, None]
    frequency = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    pe = torch.zeros(block_size, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * frequency)
    pe[:, 1::2] = torch.cos(position * frequency)
    return pe.to(torch.get_default_dtype())
