"""Attention masks, in one convention: a boolean tensor that is True where attention is ALLOWED.

That is the convention of `torch.nn.functional.scaled_dot_product_attention`. Beware that
`torch.nn.MultiheadAttention` and `torch.nn.Transformer*` use the opposite one (True means
"masked out"): pass them `~mask`.

Shapes: a mask for attention scores is broadcastable to [batch, heads, query_len, key_len].
"""
import torch


def causal_mask(seq_len: int, device=None) -> torch.Tensor:
    """[seq_len, seq_len] lower-triangular mask: position i may attend to positions 0..i only."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()


def padding_mask(token_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """[batch, seq_len] mask, True at real tokens and False at padding."""
    if token_ids.dim() != 2:
        raise ValueError(f"token_ids must be [batch, seq_len], got shape {tuple(token_ids.shape)}")
    return token_ids != pad_id


def attention_mask(key_padding: torch.Tensor | None = None, causal: bool = False,
                   query_len: int | None = None, device=None) -> torch.Tensor | None:
    """Combine a key padding mask [batch, key_len] and/or a causal mask into one attention mask.

    Returns a mask of shape [batch, 1, query_len, key_len] (or [query_len, key_len] when
    there is no padding mask), ready for `scaled_dot_product_attention`; None if neither
    kind of masking is asked for. `query_len` defaults to the key length; a causal mask
    needs them equal.
    """
    if key_padding is None and not causal:
        return None
    if key_padding is not None:
        if key_padding.dtype != torch.bool or key_padding.dim() != 2:
            raise ValueError("key_padding must be a boolean [batch, key_len] mask (True = real token), "
                             f"got {key_padding.dtype} of shape {tuple(key_padding.shape)}")
        key_len = key_padding.shape[1]
        device = key_padding.device
    elif query_len is None:
        raise ValueError("a causal mask alone needs query_len")
    else:
        key_len = query_len
    query_len = key_len if query_len is None else query_len
    mask = None
    if causal:
        if query_len != key_len:
            raise ValueError(f"a causal mask needs query_len == key_len, got {query_len} and {key_len}")
        mask = causal_mask(key_len, device=device)
    if key_padding is not None:
        keys = key_padding[:, None, None, :]  # [batch, 1, 1, key_len]
        mask = keys if mask is None else keys & mask
        mask = mask.expand(-1, 1, query_len, key_len)
    return mask
