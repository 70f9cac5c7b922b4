"""A small decoder-only Transformer language model (GPT), in one readable file.

Token and position embeddings, a stack of pre-LN blocks with causal self-attention (the
package's TransformerBlock), a final LayerNorm and a language-model head that shares its
weights with the token embedding. Lesson 12 trains it on Tang poems; lesson 15 adapts it.
Lesson 14 adds its cache path: forward(..., cache=KVCache) runs only the new positions, reading
the earlier ones' keys and values from the cache, and `decoding.decode` uses it.
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import IGNORE_INDEX, check_lm_inputs
from .decoding import decode
from .kv_cache import KVCache, causal_attention
from .transformer import TransformerBlock


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 128   # the longest context, in tokens
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128      # the width of every token's vector ("4096 dimensions" in a 7B model)
    dropout: float = 0.0
    bias: bool = False      # no biases in Linear/LayerNorm: slightly faster, as good

    def to_dict(self) -> dict:
        return asdict(self)



def _init_module(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def init_weights(model: nn.Module, residual_projections: tuple[str, ...], n_layer: int) -> None:
    """GPT-2's initialisation, for GPT and its LLaMA-style twin: weights N(0, 0.02), biases 0,
    and each residual branch's last projection (the parameters whose names end in
    residual_projections) smaller by sqrt(2 · n_layer), so that the residual stream's variance
    does not grow with depth."""
    model.apply(_init_module)
    for name, param in model.named_parameters():
        if name.endswith(residual_projections):
            nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.d_model % config.n_head:
            raise ValueError(f"d_model ({config.d_model}) must be divisible by n_head ({config.n_head})")
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.block_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.n_head, 4 * config.d_model, config.dropout, bias=config.bias)
            for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying: one matrix reads and writes tokens
        init_weights(self, ("out_proj.weight", "ffn.down.weight"), config.n_layer)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameters, counted once each (tied weights included once); position embeddings
        excluded by default, as is usual when quoting a model's size."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.position_embedding.weight.numel() if non_embedding else n

    def new_cache(self) -> KVCache:
        """An empty KV cache for this model's layers: forward(..., cache=) fills it."""
        return KVCache(self.config.n_layer)

    def forward(self, token_ids, targets=None, cache: KVCache | None = None):
        """Logits [batch, len, vocab] for the next token at every position, and the mean
        cross-entropy against `targets` when given.

        token_ids (and targets) must be [batch, len] integer ids inside the vocabulary, with
        1 <= len <= block_size; a target may also be IGNORE_INDEX (-100), which counts for
        nothing in the loss (the mean is over the other targets; lesson 16 masks prompts so);
        anything else raises a one-line error naming it (an id out of
        range would otherwise fail deep inside the embedding, or, on a GPU, abort the process).
        The check is skipped while torch.compile traces the model.

        With a KVCache (lesson 14), token_ids continue the positions already cached: only they
        go through the blocks, their keys and values are appended to the cache, and their
        logits are those a pass over the whole sequence gives at these positions."""
        if not torch.compiler.is_compiling():
            check_lm_inputs(token_ids, targets, self.config.vocab_size)
        batch, length = token_ids.shape
        start = 0 if cache is None else cache.length
        if start + length > self.config.block_size:
            where = f"{start} cached + {length} new positions are" if start else f"sequence of {length} tokens is"
            raise ValueError(f"{where} longer than block_size={self.config.block_size}")
        if length == 0:
            raise ValueError("token_ids holds no token (shape [batch, 0]): give every row at least one, "
                             "e.g. the END id 0 to start a new poem")
        positions = torch.arange(start, start + length, device=token_ids.device)
        x = self.dropout(self.token_embedding(token_ids) + self.position_embedding(positions))
        for layer, block in enumerate(self.blocks):
            x = block(x, causal=True) if cache is None else _block_with_cache(block, x, cache, layer)
        logits = self.lm_head(self.norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return logits, loss

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6·N for the weights (forward + backward) plus attention's
        6 · n_layer · block_size · d_model for the scores and the weighted sum, forward and
        backward. PaLM's appendix B (and nanoGPT) count 12 · n_layer · block_size · d_model;
        this book halves it, because under the causal mask a token attends on average to half
        the context and the fused kernel skips the masked half. Every MFU in the book uses
        this halved count."""
        c = self.config
        return 6 * self.num_parameters() + 6 * c.n_layer * c.block_size * c.d_model

    def generate(self, token_ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, stop_id: int | None = None, top_p: float | None = None,
                 use_cache: bool = True):
        """Append up to max_new_tokens chosen tokens to each row (greedy when temperature == 0).

        A row that writes stop_id stops there (padded with stop_id until every row has
        stopped). This is `encoding_world.decoding.decode`, the book's one generation loop,
        which lesson 13 derives (with the KV cache of lesson 14 unless use_cache=False).
        """
        return decode(self, token_ids, max_new_tokens, temperature, top_k, top_p, generator, stop_id, use_cache)


def _block_with_cache(block: TransformerBlock, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
    """block(x, causal=True) for new positions x [batch, new, d_model] that continue those in
    `cache`: their keys and values join the cache's entry for `layer`, and their queries attend
    to every cached position up to their own."""
    attn = block.self_attn
    batch, new, _ = x.shape
    h = block.norm1(x)
    q, k, v = (attn._split_heads(proj(h)) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    k, v = cache.update(layer, k, v)
    out = causal_attention(q, k, v, attn.dropout if attn.training else 0.0)
    x = x + block.dropout(attn.out_proj(out.transpose(1, 2).reshape(batch, new, attn.d_model)))
    return x + block.dropout(block.ffn(block.norm2(x)))
