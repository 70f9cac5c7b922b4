"""A LLaMA-style variant of the book's GPT (lesson 14): what open models changed since GPT-2.

Four pieces replace GPT's, each written out step by step in lesson 14 and checked there
against `torch.nn.RMSNorm` and the LLaMA implementation of Hugging Face transformers:

* `RMSNorm` instead of LayerNorm: rescale by the root mean square, no mean subtracted,
  no bias (Zhang & Sennrich, 2019);
* `SwiGLU` instead of the GELU feed-forward: down(silu(gate(x)) * up(x)) (Shazeer, 2020),
  with a hidden width of about 2/3 · 4 · d_model so that its three matrices hold as many
  weights as GPT's two (`swiglu_hidden_size`);
* rotary position embeddings (`apply_rope`, RoPE; Su et al., 2021) instead of a learned
  position table: queries and keys are rotated by an angle proportional to their position,
  so that their dot product depends only on the distance between the two positions;
* grouped-query attention (`Attention` with n_kv_head < n_head; Ainslie et al., 2023):
  several query heads share one key/value head, which shrinks the KV cache.

`LlamaGPT` keeps GPT's interface, forward(token_ids, targets=None) -> (logits, loss),
num_parameters(), flops_per_token() and config.block_size, so the book's training code
(`train.run` with arch="llama") and `decoding.decode` use it unchanged; like GPT it offers a
cache path, new_cache() and forward(..., cache=KVCache), which `decoding.decode` uses. Rotations follow transformers' LLaMA convention (`rotate_half`:
coordinate i is paired with i + head_dim/2), so its weights and transformers' are
interchangeable.
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_lm_inputs
from .gpt import init_weights
from .kv_cache import KVCache, causal_attention


def swiglu_hidden_size(d_model: int, multiple_of: int = 32) -> int:
    """LLaMA's feed-forward width: 2/3 of 4·d_model, rounded up to a multiple of `multiple_of`
    (LLaMA-7B: d_model 4096, multiple_of 256 → 11008)."""
    return multiple_of * math.ceil(int(2 * 4 * d_model / 3) / multiple_of)


@dataclass
class LlamaGPTConfig:
    vocab_size: int
    block_size: int = 128          # the longest context, in tokens
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None   # key/value heads: None = n_head (multi-head); fewer = grouped-query
    d_model: int = 128
    d_ff: int | None = None        # SwiGLU width: None = swiglu_hidden_size(d_model, ffn_multiple_of)
    ffn_multiple_of: int = 32
    dropout: float = 0.0
    rope_base: float = 10000.0     # θ of RoPE: the slowest pair turns once every 2π·θ positions or so
    norm_eps: float = 1e-6
    tie_embeddings: bool = True    # the LM head shares the token embedding's matrix, as in the book's GPT

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.d_ff is None:
            self.d_ff = swiglu_hidden_size(self.d_model, self.ffn_multiple_of)
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if (self.d_model // self.n_head) % 2:
            raise ValueError(f"head_dim = d_model / n_head = {self.d_model // self.n_head} must be even: "
                             f"RoPE rotates pairs of coordinates")
        if not 1 <= self.n_kv_head <= self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_gpt_config(cls, config, **changes) -> "LlamaGPTConfig":
        """The LLaMA-style twin of a gpt.GPTConfig: same vocabulary, context, depth, heads and
        width (GPT's `bias` is dropped: these models have none); `changes` override fields."""
        fields = dict(vocab_size=config.vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                      n_head=config.n_head, d_model=config.d_model, dropout=config.dropout)
        return cls(**(fields | changes))


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight over the last dimension, computed in float32."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class SwiGLU(nn.Module):
    """The gated feed-forward of LLaMA: down(silu(gate(x)) * up(x)), without biases."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.down_proj(self.dropout(F.silu(self.gate_proj(x)) * self.up_proj(x)))


def rope_inverse_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """θ_i = base^(−2i/head_dim) for i = 0 … head_dim/2 − 1: the angle per position of each pair."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE's pairs of coordinates, got {head_dim}")
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position·θ_i, [len, head_dim] (each angle twice: pairs are (i, i + head_dim/2)),
    in inv_freq's dtype (float32 unless you pass float64)."""
    angles = positions.to(inv_freq.dtype)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) → (−x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+head_dim/2}) of x [..., len, head_dim] by its position's angle
    (computed in float32, returned in x's dtype)."""
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


class Attention(nn.Module):
    """Causal self-attention with RoPE and n_kv_head ≤ n_head key/value heads (grouped-query).

    forward(x, cos, sin, cache=None, layer=0): x [batch, new, d_model]; cos/sin for the new
    positions; with a KVCache, the new keys and values are appended to `layer`'s entry and
    the queries attend to everything cached.
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int | None = None, dropout: float = 0.0):
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if d_model % n_head or n_head % n_kv_head:
            raise ValueError(f"need d_model ({d_model}) divisible by n_head ({n_head}), "
                             f"and n_head divisible by n_kv_head ({n_kv_head})")
        self.d_model, self.n_head, self.n_kv_head = d_model, n_head, n_kv_head
        self.head_dim = d_model // n_head
        self.q_proj = nn.Linear(d_model, n_head * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_head * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_head * self.head_dim, bias=False)
        self.out_proj = nn.Linear(n_head * self.head_dim, d_model, bias=False)
        self.dropout = dropout

    def _split_heads(self, x, heads):  # [batch, len, heads·head_dim] -> [batch, heads, len, head_dim]
        batch, length, _ = x.shape
        return x.view(batch, length, heads, self.head_dim).transpose(1, 2)

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0):
        batch, new, _ = x.shape
        q = apply_rope(self._split_heads(self.q_proj(x), self.n_head), cos, sin)
        k = apply_rope(self._split_heads(self.k_proj(x), self.n_kv_head), cos, sin)
        v = self._split_heads(self.v_proj(x), self.n_kv_head)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        out = causal_attention(q, k, v, self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, new, self.n_head * self.head_dim))


class LlamaBlock(nn.Module):
    """x + Attn(RMSNorm(x)), then + SwiGLU(RMSNorm(x)): GPT's pre-norm block with LLaMA's parts."""

    def __init__(self, config: LlamaGPTConfig):
        super().__init__()
        self.norm1 = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config.d_model, config.n_head, config.n_kv_head, config.dropout)
        self.norm2 = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = SwiGLU(config.d_model, config.d_ff, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0):
        x = x + self.dropout(self.attn(self.norm1(x), cos, sin, cache, layer))
        return x + self.dropout(self.ffn(self.norm2(x)))


class LlamaGPT(nn.Module):
    """The book's GPT with RMSNorm, SwiGLU, RoPE (no position embedding) and optional GQA."""

    def __init__(self, config: LlamaGPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(LlamaBlock(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        # Not a parameter and not saved: recomputed from the config.
        self.register_buffer("inv_freq", rope_inverse_frequencies(config.head_dim, config.rope_base),
                             persistent=False)
        init_weights(self, ("out_proj.weight", "ffn.down_proj.weight"), config.n_layer)   # as GPT's

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameters, counted once each (a tied LM head once). There is no position table, so
        `non_embedding` changes nothing; it is accepted for GPT's interface."""
        return sum(p.numel() for p in self.parameters())

    def new_cache(self) -> KVCache:
        """An empty KV cache for this model's layers: forward(..., cache=) fills it."""
        return KVCache(self.config.n_layer)

    def forward(self, token_ids, targets=None, cache: KVCache | None = None):
        """Logits [batch, len, vocab] for the next token at every position, and the mean
        cross-entropy against `targets` when given. With a KVCache, token_ids continue the
        positions already cached, and their keys and values are added to it. Bad input
        (ids outside the vocabulary, wrong shapes, no token) is refused as by GPT.forward."""
        if not torch.compiler.is_compiling():
            check_lm_inputs(token_ids, targets, self.config.vocab_size)
        batch, length = token_ids.shape
        if length == 0:
            raise ValueError("token_ids holds no token (shape [batch, 0]): give every row at least one")
        start = 0 if cache is None else cache.length
        if start + length > self.config.block_size:
            where = f"{start} cached + {length} new positions are" if start else f"sequence of {length} tokens is"
            raise ValueError(f"{where} longer than block_size={self.config.block_size}")
        positions = torch.arange(start, start + length, device=token_ids.device)
        cos, sin = rope_cos_sin(positions, self.inv_freq)
        x = self.dropout(self.token_embedding(token_ids))
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, layer)
        logits = self.lm_head(self.norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def flops_per_token(self) -> int:
        """Training FLOPs per token, counted as for GPT: 6·N for the weights plus attention's
        6 · n_layer · block_size · d_model (query heads × head_dim = d_model, whatever n_kv_head)."""
        c = self.config
        return 6 * self.num_parameters() + 6 * c.n_layer * c.block_size * c.d_model


def transformers_state_dict(model: LlamaGPT) -> dict:
    """The model's weights under the names of transformers' LlamaForCausalLM."""
    names = {"token_embedding.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "lm_head.weight": "lm_head.weight"}
    parts = {"norm1": "input_layernorm", "norm2": "post_attention_layernorm", "attn.q_proj": "self_attn.q_proj",
             "attn.k_proj": "self_attn.k_proj", "attn.v_proj": "self_attn.v_proj", "attn.out_proj": "self_attn.o_proj",
             "ffn.gate_proj": "mlp.gate_proj", "ffn.up_proj": "mlp.up_proj", "ffn.down_proj": "mlp.down_proj"}
    for i in range(model.config.n_layer):
        names |= {f"blocks.{i}.{ours}.weight": f"model.layers.{i}.{theirs}.weight" for ours, theirs in parts.items()}
    return {names[name]: tensor for name, tensor in model.state_dict().items()}


def to_transformers(model: LlamaGPT):
    """A transformers LlamaForCausalLM (in eval mode) with this model's configuration and weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head, max_position_embeddings=c.block_size,
        rms_norm_eps=c.norm_eps, rope_theta=c.rope_base, tie_word_embeddings=c.tie_embeddings,
        attention_bias=False, mlp_bias=False, hidden_act="silu"))
    hf.load_state_dict(transformers_state_dict(model))
    return hf.to(next(model.parameters()).device).eval()
