"""Character-level recurrent language models: a vanilla RNN and an LSTM (lesson 11).

The model reads a sequence one token at a time and carries a hidden state from each step to
the next; it has the interface of the book's GPT (`forward(token_ids, targets=None) ->
(logits, loss)`, `num_parameters()`, `generate`), so the book's one training loop
(`train.train_steps`) trains either, and its one generation loop (`decoding.decode`) writes
with either:

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

`next_logits(token_ids, state)` is the hook `decoding.decode` uses for a model with a state:
the first call reads the prompt, every later one a single new token, so writing costs one
recurrent step per token however long the text has grown (a GPT re-reads its window).
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_lm_inputs
from .decoding import decode

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
        check_lm_inputs(token_ids, targets, self.config.vocab_size)
        if token_ids.shape[1] == 0:
            raise ValueError("token_ids holds no token (shape [batch, 0]): give every row at least one, "
                             "e.g. the END id 0 to start a new poem")

    def forward_with_state(self, token_ids, state=None):
        """Logits [batch, len, vocab] and the final state: h [n_layer, batch, d] for the RNN,
        (h, c) for the LSTM. Pass the state back in to continue the same sequences."""
        self._check(token_ids, None)
        return self._read(token_ids, state)

    def _read(self, token_ids, state):
        x = self.token_embedding(token_ids) * self.input_scale
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16:
            # The CPU's kernels (oneDNN) have no float16 recurrence; a GPU's cuDNN has. When float16
            # autocast is rehearsed on a CPU (ENCODING_WORLD_AUTOCAST=fp16), the recurrence alone runs
            # in float32 and the LM head still in float16.
            with torch.autocast("cpu", enabled=False):
                hidden, state = self.rnn(x.float(), state)
        else:
            hidden, state = self.rnn(x, state)
        return self.lm_head(hidden), state

    def forward(self, token_ids, targets=None):
        """Logits [batch, len, vocab] for the next token at every position, and the mean
        cross-entropy against `targets` when given (GPT's interface)."""
        self._check(token_ids, targets)
        logits, _ = self._read(token_ids, None)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def next_logits(self, token_ids, state=None):
        """Logits [batch, vocab] for the token after token_ids, and the state after reading it.

        With state None every token of token_ids is read; otherwise only the last one, the
        state standing for all before it. This is the hook through which `decoding.decode`
        writes with a recurrent model: one recurrent step per new token."""
        logits, state = self.forward_with_state(token_ids if state is None else token_ids[:, -1:], state)
        return logits[:, -1, :], state

    def generate(self, token_ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, stop_id: int | None = None, top_p: float | None = None):
        """Append up to max_new_tokens chosen tokens to each row (greedy when temperature == 0),
        as `GPT.generate` does: this is `decoding.decode`, which carries the state through
        `next_logits`, so each new token costs one recurrent step."""
        return decode(self, token_ids, max_new_tokens, temperature, top_k, top_p, generator, stop_id)
