"""The Transformer block and the encoder and decoder stacks built from it (lesson 9).

Pre-LayerNorm blocks (normalise, then attend or feed forward, then add the residual), as in
GPT-2 and most models since: they train stably without a learning-rate warm-up. Lesson 9
checks each block against torch.nn.TransformerEncoderLayer / DecoderLayer with
`norm_first=True` and the same weights.
"""
import torch
from torch import nn

from .attention import MultiHeadAttention, sinusoidal_positional_encoding


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear(d_model → d_ff), GELU, Linear(d_ff → d_model)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.down(self.dropout(nn.functional.gelu(self.up(x))))


class TransformerBlock(nn.Module):
    """One pre-LN block: x + SelfAttn(LN(x)) [+ CrossAttn(LN(x), memory)] + FFN(LN(x)).

    With `cross_attention=True` it is a decoder block of an encoder–decoder model: after
    attending to its own (masked) positions it attends to the encoder's output `memory`.
    """

    def __init__(self, d_model: int, n_head: int, d_ff: int | None = None, dropout: float = 0.0,
                 cross_attention: bool = False, bias: bool = True):
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.norm1 = nn.LayerNorm(d_model, bias=bias)
        self.self_attn = MultiHeadAttention(d_model, n_head, dropout=dropout, bias=bias)
        self.cross_attn = None
        if cross_attention:
            self.norm_cross = nn.LayerNorm(d_model, bias=bias)
            self.cross_attn = MultiHeadAttention(d_model, n_head, dropout=dropout, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, bias=bias)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask=None, memory=None, memory_mask=None, causal: bool = False):
        return self.forward_with_weights(x, mask, memory, memory_mask, causal, need_weights=False)[0]

    def forward_with_weights(self, x, mask=None, memory=None, memory_mask=None, causal: bool = False,
                             need_weights: bool = True):
        """forward(), also returning the self- and cross-attention weights (None where absent)."""
        attended, self_weights = self.self_attn(self.norm1(x), mask=mask, causal=causal, need_weights=need_weights)
        x = x + self.dropout(attended)
        cross_weights = None
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("this block has cross-attention: pass the encoder output as memory")
            attended, cross_weights = self.cross_attn(self.norm_cross(x), context=memory, mask=memory_mask,
                                                      need_weights=need_weights)
            x = x + self.dropout(attended)
        elif memory is not None:
            raise ValueError("memory was given to a block built without cross_attention")
        return x + self.dropout(self.ffn(self.norm2(x))), self_weights, cross_weights

    @torch.no_grad()
    def load_from_torch(self, layer) -> "TransformerBlock":
        """Copy weights from nn.TransformerEncoderLayer or nn.TransformerDecoderLayer
        (norm_first=True, activation='gelu', batch_first=True) of the same size."""
        if not (layer.norm_first and layer.self_attn.batch_first):
            raise ValueError("the torch layer must be built with norm_first=True and batch_first=True")
        is_decoder = isinstance(layer, nn.TransformerDecoderLayer)
        if is_decoder != (self.cross_attn is not None):
            raise ValueError("a decoder layer needs a block with cross_attention=True, an encoder layer one without")
        self.self_attn.load_from_torch(layer.self_attn)
        self.norm1.load_state_dict(layer.norm1.state_dict())
        if is_decoder:
            self.cross_attn.load_from_torch(layer.multihead_attn)
            self.norm_cross.load_state_dict(layer.norm2.state_dict())
            self.norm2.load_state_dict(layer.norm3.state_dict())
        else:
            self.norm2.load_state_dict(layer.norm2.state_dict())
        self.ffn.up.load_state_dict(layer.linear1.state_dict())
        self.ffn.down.load_state_dict(layer.linear2.state_dict())
        return self


class TokenEmbedding(nn.Module):
    """Token embedding scaled by √d_model plus fixed sinusoidal positions (as in the original Transformer)."""

    def __init__(self, vocab_size: int, d_model: int, block_size: int = 512, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.register_buffer("positions", sinusoidal_positional_encoding(block_size, d_model), persistent=False)
        self.scale = d_model ** 0.5
        self.dropout = nn.Dropout(dropout)

    def forward(self, token_ids):
        length = token_ids.shape[1]
        if length > self.positions.shape[0]:
            raise ValueError(f"sequence of {length} tokens is longer than block_size={self.positions.shape[0]}")
        return self.dropout(self.embed(token_ids) * self.scale + self.positions[:length])


class Encoder(nn.Module):
    """A stack of self-attention blocks with a final LayerNorm (BERT-like when used alone)."""

    def __init__(self, n_layer: int, d_model: int, n_head: int, d_ff: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_head, d_ff, dropout) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x, mask=None):
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.norm(x)


class Decoder(nn.Module):
    """A stack of blocks with causal self-attention and, given an encoder, cross-attention.

    Without cross-attention it is GPT-like (decoder-only); with it, T5-like (encoder–decoder).
    """

    def __init__(self, n_layer: int, d_model: int, n_head: int, d_ff: int | None = None,
                 dropout: float = 0.0, cross_attention: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_head, d_ff, dropout, cross_attention)
                                    for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x, mask=None, memory=None, memory_mask=None):
        for block in self.blocks:
            x = block(x, mask=mask, memory=memory, memory_mask=memory_mask)
        return self.norm(x)

    def forward_with_weights(self, x, mask=None, memory=None, memory_mask=None):
        """forward(), also returning each block's self- and cross-attention weights (lists;
        the cross list is empty for a decoder-only stack)."""
        self_weights, cross_weights = [], []
        for block in self.blocks:
            x, w, cw = block.forward_with_weights(x, mask=mask, memory=memory, memory_mask=memory_mask)
            self_weights.append(w)
            if cw is not None:
                cross_weights.append(cw)
        return self.norm(x), self_weights, cross_weights
