"""The KV cache (KV 缓存): writing a token without recomputing the ones before it (lesson 14).

A decoder-only model writes one token at a time, and at every step `decoding.decode` runs the
whole context through the model again. Yet because of the causal mask no position ever sees a
later one, so the keys and values that every layer computed for the earlier tokens are the
same at every step. A KV cache keeps them: each new token then costs one position's forward
pass plus attention over the cached keys, instead of a forward pass over the whole context.

* `KVCache` holds, for every layer, the keys and values [batch, kv_heads, length, head_dim]
  of the positions seen so far; `cache_bytes` is its size, 2 · layers · kv_heads · head_dim ·
  length · bytes per value (per sequence).
* `causal_attention` attends from the newest positions to every cached one, with as many or
  fewer key/value heads than query heads (grouped-query attention, `llama.Attention`).
* `gpt_forward` is the book's `GPT` forward pass reading and extending a cache (GPT's own
  forward takes no cache); `llama.LlamaGPT.forward` takes `cache=` itself.
* `generate` is `decoding.decode` with a cache: the same tokens, greedy or sampled under the
  same seed. A context never exceeds `block_size`; once the text is longer, the window slides
  and every position changes, so the cache is rebuilt from the window at each step, exactly
  what `decode` computes (no saving from then on).
"""
import torch
import torch.nn.functional as F

from . import decoding
from .gpt import GPT


class KVCache:
    """Keys and values of every layer for the positions processed so far.

    `update(layer, k, v)` appends the new positions' k and v ([batch, kv_heads, new, head_dim])
    to that layer's cache and returns all of them; `length` is the number of positions cached.
    """

    def __init__(self, n_layer: int):
        if n_layer < 1:
            raise ValueError(f"n_layer must be a positive number of layers, got {n_layer}")
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[-2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= layer < len(self.keys):
            raise IndexError(f"layer {layer} out of range: this cache has {len(self.keys)} layers")
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"k and v must both be [batch, kv_heads, new, head_dim], got {tuple(k.shape)} "
                             f"and {tuple(v.shape)}")
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=-2)
            v = torch.cat([self.values[layer], v], dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values of every layer."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)


def cache_bytes(n_layer: int, n_kv_head: int, head_dim: int, length: int, bytes_per_value: int,
                batch: int = 1) -> int:
    """Size of a KV cache: a key and a value vector (2) per layer, key/value head and position."""
    return 2 * n_layer * n_kv_head * head_dim * length * bytes_per_value * batch


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal attention of the newest q positions over all k/v positions.

    q: [batch, heads, new, head_dim]; k, v: [batch, kv_heads, length, head_dim] with
    length ≥ new: the queries are the last `new` positions of the sequence, and each may see
    every position up to its own. `heads` must be a multiple of `kv_heads`; each group of
    heads // kv_heads query heads shares one key/value head (grouped-query attention).
    """
    new, length = q.shape[-2], k.shape[-2]
    if new > length:
        raise ValueError(f"{new} queries but only {length} keys: the keys must include the queries' positions")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads cannot be shared out among {k.shape[1]} key/value heads")
    gqa = q.shape[1] != k.shape[1]
    if new == length:                 # the whole sequence at once: the usual causal mask
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=gqa)
    # New positions after cached ones: query i sits at position length - new + i.
    allowed = torch.ones(new, length, dtype=torch.bool, device=q.device).tril(diagonal=length - new)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, enable_gqa=gqa)


def gpt_forward(model: GPT, token_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """The logits of `GPT.forward` for token_ids [batch, new], which continue the positions
    already in `cache` (empty: a fresh sequence); their keys and values are added to it."""
    batch, new = token_ids.shape
    start = cache.length
    if start + new > model.config.block_size:
        raise ValueError(f"{start} cached + {new} new positions exceed block_size={model.config.block_size}")
    positions = torch.arange(start, start + new, device=token_ids.device)
    x = model.dropout(model.token_embedding(token_ids) + model.position_embedding(positions))
    for layer, block in enumerate(model.blocks):
        attn = block.self_attn
        h = block.norm1(x)
        q, k, v = (attn._split_heads(proj(h)) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        k, v = cache.update(layer, k, v)
        out = causal_attention(q, k, v, attn.dropout if attn.training else 0.0)
        x = x + block.dropout(attn.out_proj(out.transpose(1, 2).reshape(batch, new, attn.d_model)))
        x = x + block.dropout(block.ffn(block.norm2(x)))
    return model.lm_head(model.norm(x))


def forward_with_cache(model, token_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits of `model` (a GPT or a llama.LlamaGPT) for token_ids, reading and extending `cache`."""
    if isinstance(model, GPT):
        return gpt_forward(model, token_ids, cache)
    return model(token_ids, cache=cache)[0]


@torch.no_grad()
def generate(model, token_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
             stop_id: int | None = None) -> torch.Tensor:
    """`decoding.decode` with a KV cache: the same arguments and the same tokens.

    The prompt is processed once (the "prefill"); after that each step feeds only the token
    just chosen. When the text outgrows block_size the window slides, so the cache is rebuilt
    from the last block_size tokens at every step, which is what decode computes.
    """
    block_size = model.config.block_size
    cache = KVCache(model.config.n_layer)
    pending = token_ids                                   # tokens whose keys/values are not cached yet
    for _ in range(max_new_tokens):
        if cache.length + pending.shape[1] > block_size:  # the window slides: start again from it
            cache = KVCache(model.config.n_layer)
            pending = token_ids[:, -block_size:]
        logits = forward_with_cache(model, pending, cache)[:, -1, :].float()
        next_id = decoding.sample_next(logits, temperature, top_k, top_p, generator)
        token_ids = torch.cat([token_ids, next_id], dim=1)
        pending = next_id
        if stop_id is not None and (next_id == stop_id).all():
            break
    return token_ids
