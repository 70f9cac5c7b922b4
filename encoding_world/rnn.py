"""Character-level recurrent language models: a vanilla RNN and an LSTM (lesson 11).

The model reads a sequence one token at a time and carries a hidden state from each step to
the next; it has the interface of the book's GPT (`forward(token_ids, targets=None) ->
(logits, loss)`, `num_parameters()`, `generate`), so the same training loop trains either:

    token embedding (|V| × d) → n_layer recurrent layers of width d → LM head (tied to the embedding)

The recurrences themselves are PyTorch's `nn.RNN` (tanh) and `nn.LSTM`, whose fused kernels
are much faster than a Python loop over time steps; lesson 11 writes both out step by step
and checks them against these modules with the same weights:

    RNN:   h_t = tanh(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh)
    LSTM:  i, f, g, o = σ(·), σ(·), tanh(·), σ(·) of W_ih x_t + b_ih + W_hh h_{t−1} + b_hh
           c_t = f ⊙ c_{t−1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)

Weights are initialised as PyTorch does for the recurrent layers (uniform in ±1/√d); the
embedding E (normal, std 1/√d) is read as √d · E[x], so the recurrent layer sees inputs of
size about 1, and written through as h · Eᵀ, so the first logits are small and the first
loss is close to ln|V|.
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

CELLS = ("rnn", "lstm")


@dataclass
class CharRNNConfig:
    vocab_size: int
    d_model: int = 128      # width of the embedding and of every hidden state
    n_layer: int = 1
    cell: str = "lstm"      # "rnn" (Elman, tanh) or "lstm"
    dropout: float = 0.0    # between stacked layers (PyTorch's `dropout` argument)

    def to_dict(self) -> dict:
        return asdict(self)


class CharRNN(nn.Module):
    def __init__(self, config: CharRNNConfig):
        super().__init__()
        if config.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {config.cell!r}")
        for name in ("vocab_size", "d_model", "n_layer"):
            if getattr(config, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(config, name)}")
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        recurrent = nn.RNN if config.cell == "rnn" else nn.LSTM
        self.rnn = recurrent(config.d_model, config.d_model, num_layers=config.n_layer, batch_first=True,
                             dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying, as in the GPT
        # One table, used at two scales: read as √d · E[x] (inputs of size about 1, what a
        # recurrent layer initialised for unit inputs expects) and written as h · Eᵀ (small
        # logits at first, so the first loss is close to ln|V|). The Transformer scales its
        # embedding the same way when it reads it.
        nn.init.normal_(self.token_embedding.weight, mean=0.0, std=config.d_model ** -0.5)
        self.input_scale = config.d_model ** 0.5

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameters, counted once each (the tied embedding / LM head once). An RNN has no
        position table, so both counts are the same; the argument mirrors `GPT.num_parameters`."""
        return sum(p.numel() for p in self.parameters())

    def _check(self, token_ids, targets):
        if not isinstance(token_ids, torch.Tensor) or token_ids.dim() != 2:
            shape = tuple(token_ids.shape) if isinstance(token_ids, torch.Tensor) else type(token_ids).__name__
            raise ValueError(f"token_ids must be a 2-D tensor [batch, length], got {shape}")
        if token_ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"token_ids must hold integer ids, got dtype {token_ids.dtype}")
        if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in 0 … {self.config.vocab_size - 1}, found "
                             f"{token_ids.min().item()} … {token_ids.max().item()}")
        if token_ids.shape[1] == 0:
            raise ValueError("token_ids has length 0: give at least one token per row")
        if targets is not None and targets.shape != token_ids.shape:
            raise ValueError(f"targets must have the shape of token_ids {tuple(token_ids.shape)}, "
                             f"got {tuple(targets.shape)}")

    def forward_with_state(self, token_ids, state=None):
        """Logits [batch, len, vocab] and the final state: h [n_layer, batch, d] for the RNN,
        (h, c) for the LSTM. Pass the state back in to continue the same sequences."""
        self._check(token_ids, None)
        hidden, state = self.rnn(self.token_embedding(token_ids) * self.input_scale, state)
        return self.lm_head(hidden), state

    def forward(self, token_ids, targets=None):
        """Logits [batch, len, vocab] for the next token at every position, and the mean
        cross-entropy against `targets` when given (GPT's interface)."""
        self._check(token_ids, targets)
        logits, _ = self.forward_with_state(token_ids)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, token_ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, stop_id: int | None = None):
        """Append up to max_new_tokens sampled tokens (greedy when temperature == 0), as
        `GPT.generate` does; each new token costs one recurrent step, whatever the length so far,
        because the state summarises everything before it."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a positive number of tokens to keep, or None for all; got {top_k}")
        logits, state = self.forward_with_state(token_ids)
        logits = logits[:, -1, :].float()
        for _ in range(max_new_tokens):
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            token_ids = torch.cat([token_ids, next_id], dim=1)
            if stop_id is not None and (next_id == stop_id).all():
                break
            logits, state = self.forward_with_state(next_id, state)
            logits = logits[:, -1, :].float()
        return token_ids
