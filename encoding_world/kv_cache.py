"""The KV cache (KV 缓存): writing a token without recomputing the ones before it (lesson 14).

A decoder-only model writes one token at a time, and without a cache every step of
`decoding.decode` runs the whole context through the model again. Yet because of the causal
mask no position ever sees a later one, so the keys and values that every layer computed for
the earlier tokens are the same at every step. A KV cache keeps them: each new token then
costs one position's forward pass plus attention over the cached keys, instead of a forward
pass over the whole context.

* `KVCache` holds, for every layer, the keys and values [batch, kv_heads, length, head_dim]
  of the positions seen so far; `cache_bytes` is its size, 2 · layers · kv_heads · head_dim ·
  length · bytes per value (per sequence).
* `causal_attention` attends from the newest positions to every cached one, with as many or
  fewer key/value heads than query heads (grouped-query attention, `llama.Attention`).

A model offers a cache path by having a method `new_cache()` (an empty KVCache for its layers)
and a `forward(token_ids, cache=...)` that reads and extends it: `gpt.GPT` and
`llama.LlamaGPT` do. `decoding.decode`, the book's one generation loop, then uses it (the
prompt once, the "prefill", then one token per step); decode(..., use_cache=False) recomputes
the whole window at every step instead. Both give the same tokens.
"""
import torch
import torch.nn.functional as F


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
