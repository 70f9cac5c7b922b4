"""Choosing the next token (采样策略): greedy, temperature, top-k and top-p sampling (lesson 13).

A language model gives, at each step, logits for every token of its vocabulary; a decoding
strategy turns them into one chosen token. The pieces here work on logits [..., vocab] and
return logits of the same shape, with the tokens they drop set to -inf, so that they chain
(temperature → top-k → top-p, the order Hugging Face transformers applies its "logits
warpers" in) and end in softmax and torch.multinomial.

Conventions (the same as transformers' TemperatureLogitsWarper, TopKLogitsWarper and
TopPLogitsWarper, and as GPT.generate; lesson 13 checks them against both):

* temperature 0 means greedy decoding (argmax). It is the limit of softmax(z / T) as T → 0;
  the formula itself would divide by zero. Among tied maxima, argmax takes the lowest id.
* top-k keeps every token whose logit is at least the k-th largest, so tokens tied with the
  k-th one are all kept (more than k tokens in that case).
* top-p (nucleus) sorts the tokens by probability (ties: lower id first) and keeps a token
  when the probability of the tokens ranked before it is below p: the smallest prefix whose
  cumulative probability reaches p. If the first j tokens sum to exactly p, exactly j are
  kept ("exactly" as computed in floating point).
* both keep at least `min_tokens_to_keep` tokens (default 1); top_p = 1 keeps every token.
  transformers computes top-p from the other end (it drops a token when the probability of
  that token and all less probable ones is at most 1 − p): the same rule in exact
  arithmetic, so the two agree except where a cumulative sum lands on the boundary within
  rounding error.
"""
import torch

from .checks import check_ids, check_int, check_logits, check_number

NEG_INF = float("-inf")


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The most probable token of each row: ids [..., 1] (lowest id among ties)."""
    return logits.argmax(dim=-1, keepdim=True)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits divided by the temperature: T < 1 sharpens the distribution, T > 1 flattens it."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (temperature 0 means greedy: use greedy())")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the k highest logits of each row (and any tied with the k-th); the rest become -inf."""
    check_int("k", k, low=1)
    k = min(max(k, min_tokens_to_keep), logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the smallest set of most probable tokens whose probabilities sum to at least p."""
    p = check_number("p", p, low=0, high=1)
    check_int("min_tokens_to_keep", min_tokens_to_keep, low=1)
    if p >= 1.0:
        # Everything: in exact arithmetic no token of positive probability has a mass of 1
        # before it, but a float32 cumulative sum can reach 1 before the tail ends.
        return logits.clone()
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    mass_before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    drop_sorted = mass_before >= p
    drop_sorted[..., :min_tokens_to_keep] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)   # back from sorted order to token order
    return logits.masked_fill(drop, NEG_INF)


def _check_settings(temperature, top_k, top_p) -> None:
    """The sampling settings of filter_logits, sample_next and decode."""
    check_number("temperature", temperature, low=0)
    if top_k is not None:
        check_int("top_k", top_k, low=1)
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        # top_p_filter(logits, 0) keeps min_tokens_to_keep tokens; as a setting, 0 is a mistake.
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r} (for greedy decoding use "
                         f"temperature=0; top_p=1 or None keeps every token)")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k, then top-p (each only when given), as transformers orders them."""
    _check_settings(temperature, top_k, top_p)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits [batch, vocab]: ids [batch, 1].

    Greedy when temperature == 0; otherwise one torch.multinomial draw from the softmax of
    the filtered logits (the random-number calls of GPT.generate, so that a seeded generator
    gives the same tokens). Logits with NaN or +inf are refused (check_logits).
    """
    _check_settings(temperature, top_k, top_p)
    check_logits(logits)
    if temperature == 0:
        return greedy(logits)
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def decode(model, token_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
           stop_id: int | None = None, use_cache: bool = True, on_token=None) -> torch.Tensor:
    """Extend each row of token_ids [batch, len] by up to max_new_tokens chosen tokens.

    The book's one generation loop (GPT.generate calls it): feed the last block_size tokens,
    take the last position's logits, choose (`sample_next`), append. With stop_id, a row
    stops when it writes stop_id: from then on it is padded with stop_id, and the loop ends
    when every row has stopped (so rows may end in stop_id repeated; `completions` cuts
    them). Every row still takes part in each step's random draw, so a row's tokens do not
    depend on when the other rows stop. on_token(next_ids), if given, is called with each
    step's chosen ids [batch, 1] as soon as they are chosen (the sampling command streams
    text to the terminal with it).

    The KV cache (lesson 14): when the model offers a cache path (a `new_cache()` method and
    forward(token_ids, cache=...), as gpt.GPT and llama.LlamaGPT do) and use_cache is True,
    the prompt goes through the model once and each later step feeds only the token just
    chosen; the logits are those of the whole window, up to rounding. Once the text outgrows
    block_size the window slides and every position moves, so from then on the cache is
    rebuilt from the window at each step, which is the computation without a cache.
    use_cache=False (or a model without a cache path) runs the whole window at every step.

    A model that carries a state from one token to the next (a recurrent network, lesson 11)
    may define `next_logits(token_ids, state) -> (logits [batch, vocab], state)`: with state
    None it reads all of token_ids; otherwise it reads only the last token, the state standing
    for everything before it. decode then calls it instead of the forward pass over the last
    block_size tokens, so each new token costs one step, and such a model needs no block_size.
    """
    check_ids("token_ids", token_ids, model.config.vocab_size)
    check_int("max_new_tokens", max_new_tokens, low=0)
    _check_settings(temperature, top_k, top_p)
    if not isinstance(use_cache, bool):
        raise TypeError(f"use_cache must be True or False, got {use_cache!r}")
    if stop_id is not None:
        check_int("stop_id", stop_id, low=0, high=model.config.vocab_size - 1)
    next_logits = getattr(model, "next_logits", None)          # a recurrent model's one step (lesson 11)
    cached = next_logits is None and use_cache and callable(getattr(model, "new_cache", None))
    block_size = getattr(model.config, "block_size", None)
    state, cache, pending = None, None, token_ids   # pending: tokens whose keys and values are not cached yet
    stopped = torch.zeros(token_ids.shape[0], 1, dtype=torch.bool, device=token_ids.device)
    for _ in range(max_new_tokens):
        if next_logits is not None:
            logits, state = next_logits(token_ids, state)
        elif cached:
            if cache is None or cache.length + pending.shape[1] > block_size:   # start, or the window slid
                cache, pending = model.new_cache(), token_ids[:, -block_size:]
            logits = model(pending, cache=cache)[0][:, -1, :]
        else:
            logits = model(token_ids[:, -block_size:])[0][:, -1, :]
        next_id = sample_next(logits.float(), temperature, top_k, top_p, generator)
        if stop_id is not None:
            next_id = next_id.masked_fill(stopped, stop_id)
            stopped |= next_id == stop_id
        token_ids = torch.cat([token_ids, next_id], dim=1)
        pending = next_id
        if on_token is not None:
            on_token(next_id)
        if stopped.all():
            break
    return token_ids


def completions(token_ids: torch.Tensor, prompt_length: int, stop_id: int | None = None) -> list[list[int]]:
    """The generated part of each row (after the prompt), cut before its first stop_id."""
    check_int("prompt_length", prompt_length, low=0, high=token_ids.shape[-1])
    out = []
    for row in token_ids[:, prompt_length:].tolist():
        if stop_id is not None and stop_id in row:
            row = row[:row.index(stop_id)]
        out.append(row)
    return out


def distinct_n(texts, n: int) -> float:
    """Distinct n-grams divided by all n-grams, over a set of texts (strings or id lists).

    n-grams are taken inside each text, never across two. 1.0: no n-gram repeats anywhere;
    near 0: the texts repeat themselves or one another. 0.0 when there is no n-gram at all.
    """
    check_int("n", n, low=1)
    grams = [tuple(text[i:i + n]) for text in texts for i in range(len(text) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def average_log_likelihood(model, token_ids: torch.Tensor, prompt_length: int, stop_id: int | None = None) -> float:
    """Mean ln P(token | everything before it), in nats per token, under the model itself
    (temperature 1, nothing filtered), over the generated tokens of every row: those after
    the prompt, up to and including the row's first stop_id.

    One forward pass scores all positions, so rows must fit in the model's block_size.
    """
    batch, length = token_ids.shape
    if length > model.config.block_size:
        raise ValueError(f"rows of {length} tokens do not fit block_size={model.config.block_size}")
    if not 0 < prompt_length < length:
        raise ValueError(f"prompt_length must be between 1 and {length - 1}, got {prompt_length}")
    logits = model(token_ids)[0][:, prompt_length - 1:-1].float()       # predicts positions prompt_length…
    targets = token_ids[:, prompt_length:]
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    counted = torch.ones_like(targets, dtype=torch.bool)
    if stop_id is not None:
        stops_before = (targets == stop_id).long().cumsum(dim=1) - (targets == stop_id).long()
        counted = stops_before == 0                                        # up to and including the first stop
    return (log_probs[counted].sum() / counted.sum()).item()
