"""Count-based n-gram language models (n 元语言模型) of a stream of token ids (lesson 10).

An n-gram model predicts each token from the n − 1 tokens before it:

    P(x_t | x_1 … x_{t−1}) ≈ P(x_t | x_{t−n+1} … x_{t−1})

and estimates that probability by counting, in a training stream, how often each n-gram
(a context of n − 1 tokens followed by one more token) occurs. Lesson 10 derives the pieces
step by step; this module is the fast version the lessons import.

Conventions
-----------
* A stream is a 1-D sequence of ids in 0 … vocab_size − 1 (a LongTensor, a NumPy array or a
  list). Training counts the k-grams that lie inside the stream (len − k + 1 of them).
  Scoring predicts *every* token of a stream, the first ones from a context padded on the
  left with `start_id` (END = 0 in the book: a stream starts where a poem starts), so
  `cross_entropy` averages over all of its tokens. A padded context such as END END never
  occurs inside the poems, so the model treats it as unseen and relies on its shorter
  contexts (END alone), which is what the start of a poem calls for.
* A k-gram is stored as one integer key: its k ids read as a k-digit number in base
  vocab_size, so the key of a k-gram is `context_key * vocab_size + last_id`. Counting is
  `np.unique` over the keys of every position, and looking up is `np.searchsorted`; no
  Python loop touches the 3 million tokens. The keys are 64-bit integers, so
  vocab_size ** order must stay below 2 ** 63 (order ≤ 5 for 3,000 characters).
* Order 0 is the uniform model, P = 1 / vocab_size for every token.

Smoothing (平滑)
----------------
* ``"mle"``: maximum likelihood, c(h, w) / c(h). An n-gram never seen gets probability 0,
  so a stream that contains one has an infinite loss. For a context never seen the MLE is
  undefined (0 / 0); the model then returns the uniform distribution.
* ``"add-k"``: (c(h, w) + k) / (c(h) + k·V): k imaginary extra sightings of every n-gram.
* ``"jelinek-mercer"``: linear interpolation with the lower orders,
  P_k(w | h) = λ_k · c(h, w) / c(h) + (1 − λ_k) · P_{k−1}(w | h′) when the context h was seen
  (h′ drops h's oldest token), P_{k−1}(w | h′) when it was not, and P_0 = 1 / V.
* ``"kneser-ney"``: interpolated Kneser–Ney. Each seen count gives up a discount D_k
  (0 < D_k ≤ 1), and the mass given up goes to the lower order:
  P_k(w | h) = [max(c_k(h, w) − D_k, 0) + D_k · N_k(h) · P_{k−1}(w | h′)] / c_k(h), where
  N_k(h) is the number of distinct tokens seen after h. The highest order counts
  occurrences; every lower order counts *continuations* — in how many distinct contexts a
  (k)-gram was seen — because the lower order is only consulted when the higher one knows
  little, and what matters then is how readily a token follows *new* contexts.

Every smoothed distribution sums to 1 for every context. The hyper-parameters (k, the λ_k,
the D_k) are chosen, unless given, on a held-out slice of the TRAINING stream — every
`heldout_every`-th poem, cut at `end_id` tokens, the same way the book's validation split
is made — by coordinate-wise minimisation of the held-out cross-entropy; the counts are
then taken again on the whole training stream. The validation stream is never consulted.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

SMOOTHINGS = ("mle", "add-k", "jelinek-mercer", "kneser-ney")

__all__ = ["SMOOTHINGS", "NGramCounts", "NGramLM", "as_ids", "gram_keys", "max_order", "split_heldout",
           "fit_models", "best_ngram", "best_ngram_val_loss"]


def as_ids(stream, vocab_size: int | None = None) -> np.ndarray:
    """A stream of ids (tensor, array or list) as a 1-D int64 NumPy array, range-checked."""
    if hasattr(stream, "detach"):  # a torch tensor
        stream = stream.detach().cpu().numpy()
    ids = np.asarray(stream)
    if ids.ndim != 1:
        raise ValueError(f"a stream is 1-D, got shape {ids.shape}")
    if ids.size == 0:
        return ids.astype(np.int64)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"a stream holds integer ids, got dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if vocab_size is not None and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"ids must lie in 0 … {vocab_size - 1}, found {ids.min()} … {ids.max()}")
    return ids


def max_order(vocab_size: int) -> int:
    """The largest order whose keys fit in a signed 64-bit integer: vocab_size ** order < 2 ** 63."""
    order = 0
    while vocab_size ** (order + 1) < 2 ** 63:
        order += 1
    return order


def _check_order(order: int, vocab_size: int) -> None:
    if order < 0:
        raise ValueError(f"the order must be 0 or more, got {order}")
    if vocab_size < 2:
        raise ValueError(f"a vocabulary needs at least 2 tokens, got {vocab_size}")
    if order > max_order(vocab_size):
        raise ValueError(f"order {order} with {vocab_size} tokens does not fit 64-bit keys: "
                         f"the largest order is {max_order(vocab_size)}")


def gram_keys(stream, k: int, vocab_size: int, start_id: int = 0) -> np.ndarray:
    """The key of the k-gram that ends at every position of the stream.

    The k-gram ending at position t is (x_{t−k+1}, …, x_t), the stream being preceded by
    k − 1 copies of start_id; its key is those ids read as a number in base vocab_size.
    key // vocab_size is the key of its context (0 for k = 1), key % vocab_size its last id.
    """
    ids = as_ids(stream, vocab_size)
    _check_order(k, vocab_size)
    if k < 1:
        raise ValueError("a k-gram needs k ≥ 1")
    padded = np.concatenate([np.full(k - 1, start_id, dtype=np.int64), ids])
    keys = np.zeros(len(ids), dtype=np.int64)
    for j in range(k):
        keys = keys * vocab_size + padded[j:j + len(ids)]
    return keys


def _context_keys(contexts: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
    """Keys of the (k−1)-token contexts that end each row of `contexts` ([B, width], width ≥ k−1)."""
    keys = np.zeros(len(contexts), dtype=np.int64)
    width = contexts.shape[1]
    for j in range(width - (k - 1), width):
        keys = keys * vocab_size + contexts[:, j]
    return keys


def split_heldout(stream, every: int = 20, end_id: int = 0):
    """(fitting part, held-out part) of a stream of END-separated poems: every `every`-th poem
    (the 20th, 40th, …) is held out, as `lm_data.split_poems` does for the validation set.
    Each part is itself a stream of whole poems."""
    ids = as_ids(stream)
    if every < 2:
        raise ValueError(f"hold out every 2nd poem or fewer, got every={every}")
    # The poem a token belongs to: the number of END tokens before it (an END ends its own poem).
    poem = np.concatenate([[0], np.cumsum(ids == end_id)[:-1]]) if len(ids) else ids
    held = poem % every == every - 1
    return ids[~held], ids[held]


def _runs(sorted_values: np.ndarray):
    """Distinct values of a sorted array, where each run starts, and how long it is."""
    if len(sorted_values) == 0:
        return sorted_values, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(sorted_values)) + 1])
    lengths = np.diff(np.append(starts, len(sorted_values)))
    return sorted_values[starts], starts, lengths


def _find(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where sorted_keys[i] == query, else 0 (queries should be sorted: it is much faster)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), dtype=values.dtype)
    i = np.searchsorted(sorted_keys, queries)
    i[i == len(sorted_keys)] = 0
    return np.where(sorted_keys[i] == queries, values[i], 0)


class _Table:
    """The counts of one order: sorted gram keys with their counts, and per context the total
    count c(h) and the number of distinct next tokens N(h)."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, vocab_size: int):
        self.keys, self.counts, self.vocab_size = keys, counts.astype(np.int64), vocab_size
        self.contexts, starts, self.types = _runs(keys // vocab_size)
        self.totals = np.add.reduceat(self.counts, starts) if len(starts) else np.zeros(0, dtype=np.int64)

    def at_positions(self, queries: np.ndarray):
        """(c(h, w), c(h), N(h)) as float arrays, for an array of gram keys."""
        order = np.argsort(queries, kind="stable")
        q = queries[order]
        found = [_find(self.keys, self.counts, q), _find(self.contexts, self.totals, q // self.vocab_size),
                 _find(self.contexts, self.types, q // self.vocab_size)]
        out = []
        for values in found:
            unsorted = np.empty(len(q), dtype=np.float64)
            unsorted[order] = values
            out.append(unsorted)
        return tuple(out)

    def rows(self, context_keys: np.ndarray):
        """Dense counts c(h, ·) [B, V], with c(h) and N(h) [B, 1], for B context keys."""
        V = self.vocab_size
        lo = np.searchsorted(self.keys, context_keys * V)
        hi = np.searchsorted(self.keys, context_keys * V + V)
        lengths = hi - lo
        dense = np.zeros((len(context_keys), V), dtype=np.float64)
        if lengths.sum():
            row = np.repeat(np.arange(len(context_keys)), lengths)
            offset = np.repeat(lo - (np.cumsum(lengths) - lengths), lengths)
            pos = offset + np.arange(lengths.sum())
            dense[row, self.keys[pos] % V] = self.counts[pos]
        return dense, dense.sum(axis=1, keepdims=True), (dense > 0).sum(axis=1, keepdims=True).astype(np.float64)


class NGramCounts:
    """The counts of every k-gram, k = 1 … max_order, inside one stream (shared by models of
    any order up to max_order and any smoothing)."""

    def __init__(self, stream, max_order: int, vocab_size: int, start_id: int = 0):
        _check_order(max_order, vocab_size)
        ids = as_ids(stream, vocab_size)
        self.max_order, self.vocab_size, self.start_id = max_order, vocab_size, start_id
        self.n_tokens = len(ids)
        self._raw = {k: np.unique(gram_keys(ids, k, vocab_size, start_id)[k - 1:], return_counts=True)
                     for k in range(1, max_order + 1)}
        self._tables: dict = {}

    def table(self, k: int, continuation: bool = False) -> _Table:
        """The order-k table: occurrence counts, or (continuation=True) for each k-gram the
        number of distinct tokens seen in front of it — read off the (k+1)-grams."""
        if not 1 <= k <= self.max_order - continuation:
            raise ValueError(f"no order-{k} {'continuation ' if continuation else ''}table in counts "
                             f"of max_order {self.max_order}")
        if (k, continuation) not in self._tables:
            if continuation:
                suffixes = np.sort(self._raw[k + 1][0] % self.vocab_size ** k)
                keys, _, counts = _runs(suffixes)
            else:
                keys, counts = self._raw[k]
            self._tables[k, continuation] = _Table(keys, counts, self.vocab_size)
        return self._tables[k, continuation]


def _minimise(objective, x0, bounds, sweeps: int = 2):
    """Coordinate-wise bounded scalar minimisation (deterministic)."""
    x = [float(v) for v in x0]
    best = objective(x)
    for _ in range(sweeps):
        for i in range(len(x)):
            result = minimize_scalar(lambda v, i=i: objective(x[:i] + [v] + x[i + 1:]), bounds=bounds,
                                     method="bounded", options={"xatol": 1e-3})
            if result.fun < best:
                x[i], best = float(result.x), float(result.fun)
    return x


class NGramLM:
    """An n-gram language model of token ids.

    >>> lm = NGramLM(3, vocab_size, "kneser-ney").fit(train_ids)
    >>> lm.cross_entropy(val_ids)               # nats per token
    >>> lm.next_token_distribution([12, 7])     # P(· | 12 7), an array of vocab_size numbers

    k (add-k), weights (λ_1 … λ_n, Jelinek–Mercer) and discounts (D_1 … D_n, Kneser–Ney) are
    chosen on a held-out slice of the training stream when not given.
    """

    def __init__(self, order: int, vocab_size: int, smoothing: str = "kneser-ney", *, k: float | None = None,
                 weights=None, discounts=None, start_id: int = 0, end_id: int = 0, heldout_every: int = 20):
        _check_order(order, vocab_size)
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"unknown smoothing {smoothing!r}: choose one of {', '.join(SMOOTHINGS)}")
        for name, given in (("weights", weights), ("discounts", discounts)):
            if given is not None and len(given) != order:
                raise ValueError(f"{name} needs one number per order 1 … {order}, got {len(given)}")
        if k is not None and not k > 0:
            raise ValueError(f"add-k needs k > 0, got {k}")
        if weights is not None and not all(0 <= w <= 1 for w in weights):
            raise ValueError(f"interpolation weights lie in [0, 1], got {list(weights)}")
        if discounts is not None and not all(0 < d <= 1 for d in discounts):
            raise ValueError(f"discounts lie in (0, 1], got {list(discounts)}")
        self.order, self.vocab_size, self.smoothing = order, vocab_size, smoothing
        self.k = None if k is None else float(k)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.discounts = None if discounts is None else [float(d) for d in discounts]
        self.start_id, self.end_id, self.heldout_every = start_id, end_id, heldout_every
        self._levels: dict = {}
        self.n_train = None

    def __repr__(self) -> str:
        params = {"add-k": ("k", self.k), "jelinek-mercer": ("weights", self.weights),
                  "kneser-ney": ("discounts", self.discounts)}.get(self.smoothing)
        extra = ""
        if params and params[1] is not None:
            value = params[1]
            extra = f", {params[0]}=" + (f"{value:.4g}" if isinstance(value, float)
                                        else "[" + ", ".join(f"{v:.3f}" for v in value) + "]")
        return f"NGramLM(order={self.order}, vocab_size={self.vocab_size}, smoothing={self.smoothing!r}{extra})"

    # ---- fitting -------------------------------------------------------------------------
    def _needs_tuning(self) -> bool:
        if self.order == 0:
            return False
        return {"mle": False, "add-k": self.k is None, "jelinek-mercer": self.weights is None,
                "kneser-ney": self.discounts is None}[self.smoothing]

    def _level_specs(self):
        """(order, continuation?) of each table the model reads."""
        if self.order == 0:
            return []
        if self.smoothing in ("mle", "add-k"):
            return [(self.order, False)]
        if self.smoothing == "jelinek-mercer":
            return [(k, False) for k in range(1, self.order + 1)]
        return [(k, k < self.order) for k in range(1, self.order + 1)]

    def _use(self, counts: NGramCounts) -> None:
        if counts.vocab_size != self.vocab_size or counts.start_id != self.start_id:
            raise ValueError("counts were made with another vocabulary size or start id")
        if counts.max_order < self.order:
            raise ValueError(f"counts of max_order {counts.max_order} cannot serve an order-{self.order} model")
        self._levels = {spec: counts.table(*spec) for spec in self._level_specs()}
        self.n_train = counts.n_tokens

    def fit(self, stream) -> NGramLM:
        """Count the n-grams of a training stream (choosing the smoothing's hyper-parameters
        first, on held-out training poems, when they were not given)."""
        ids = as_ids(stream, self.vocab_size)
        tuning = None
        if self._needs_tuning():
            part, held = split_heldout(ids, self.heldout_every, self.end_id)
            tuning = (NGramCounts(part, self.order, self.vocab_size, self.start_id), held)
        counts = NGramCounts(ids, max(self.order, 1), self.vocab_size, self.start_id)
        return self.fit_counts(counts, tuning)

    def fit_counts(self, counts: NGramCounts, tuning=None) -> NGramLM:
        """Like `fit`, from counts already made; tuning = (counts of the fitting part,
        held-out stream), needed when hyper-parameters must be chosen. A third element, a
        dict, may cache the held-out lookups between models (as `fit_models` does)."""
        if self._needs_tuning():
            if tuning is None:
                raise ValueError(f"{self.smoothing} needs its hyper-parameters, or tuning=(counts, heldout)")
            self._use(tuning[0])
            held = as_ids(tuning[1], self.vocab_size)
            cache = tuning[2] if len(tuning) > 2 else {}
            stats = []
            for spec in self._level_specs():
                if spec not in cache:
                    cache[spec] = self._levels[spec].at_positions(
                        gram_keys(held, spec[0], self.vocab_size, self.start_id))
                stats.append(cache[spec])
            self._tune(stats)
        self._use(counts)
        return self

    def _tune(self, stats) -> None:
        def loss(**params):
            with np.errstate(divide="ignore"):
                return float(-np.mean(np.log(self._combine(stats, **params))))
        if self.smoothing == "add-k":      # search log10 k in [−5, 1]
            self.k = 10 ** _minimise(lambda x: loss(k=10 ** x[0]), [-1.0], (-5.0, 1.0))[0]
        elif self.smoothing == "jelinek-mercer":
            self.weights = _minimise(lambda x: loss(weights=x), [0.5] * self.order, (0.0, 1.0))
        else:
            start = []
            for spec in self._level_specs():  # the usual estimate n1 / (n1 + 2 n2) as a starting point
                counts = self._levels[spec].counts
                n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
                start.append(min(max(n1 / (n1 + 2 * n2), 0.05), 0.95) if n1 + n2 else 0.5)
            self.discounts = _minimise(lambda x: loss(discounts=x), start, (1e-3, 1.0))

    # ---- probabilities -------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.order > 0 and not self._levels:
            raise RuntimeError("fit the model first")

    def _position_stats(self, ids: np.ndarray):
        return [self._levels[spec].at_positions(gram_keys(ids, spec[0], self.vocab_size, self.start_id))
                for spec in self._level_specs()]

    def _combine(self, stats, k=None, weights=None, discounts=None):
        """Probabilities from per-order (c(h, w), c(h), N(h)) arrays (positions, or [B, V] rows)."""
        V = self.vocab_size
        if self.order == 0:
            return None
        if self.smoothing == "mle":
            c, total, _ = stats[-1]
            return np.where(total > 0, c / np.maximum(total, 1), 1.0 / V)
        if self.smoothing == "add-k":
            c, total, _ = stats[-1]
            k = self.k if k is None else k
            return (c + k) / (total + k * V)
        p = 1.0 / V
        params = (weights or self.weights) if self.smoothing == "jelinek-mercer" else (discounts or self.discounts)
        for (c, total, types), x in zip(stats, params):
            safe = np.maximum(total, 1)
            if self.smoothing == "jelinek-mercer":
                here = x * c / safe + (1 - x) * p
            else:
                here = (np.maximum(c - x, 0) + x * types * p) / safe
            p = np.where(total > 0, here, p)
        return p

    def log_prob(self, stream) -> np.ndarray:
        """ln P(x_t | the tokens before it) for every position t of the stream (−inf where the
        model gives probability 0)."""
        self._check_fitted()
        ids = as_ids(stream, self.vocab_size)
        if self.order == 0:
            return np.full(len(ids), -math.log(self.vocab_size))
        with np.errstate(divide="ignore"):
            return np.log(self._combine(self._position_stats(ids)))

    def cross_entropy(self, stream) -> float:
        """Mean negative log-likelihood of the stream, in nats per token (inf if any token has
        probability 0)."""
        lp = self.log_prob(stream)
        if len(lp) == 0:
            raise ValueError("the cross-entropy of an empty stream is undefined")
        return float(-lp.mean())

    def perplexity(self, stream) -> float:
        """e ** cross-entropy: the number of equally likely choices that would be as uncertain."""
        return math.exp(self.cross_entropy(stream))

    def next_token_distributions(self, contexts) -> np.ndarray:
        """P(· | context) for a batch of contexts (lists of ids, any lengths): an array [B, V].
        Contexts shorter than order − 1 are padded on the left with start_id, as a stream is."""
        self._check_fitted()
        contexts = [as_ids(c, self.vocab_size) for c in contexts]
        V, width = self.vocab_size, max(self.order - 1, 0)
        if self.order == 0:
            return np.full((len(contexts), V), 1.0 / V)
        block = np.full((len(contexts), width), self.start_id, dtype=np.int64)
        for row, c in enumerate(contexts):
            tail = c[max(len(c) - width, 0):] if width else c[:0]
            block[row, width - len(tail):] = tail
        stats = [self._levels[spec].rows(_context_keys(block, spec[0], V)) for spec in self._level_specs()]
        p = self._combine(stats)
        return np.broadcast_to(p, (len(contexts), V)).copy()

    def next_token_distribution(self, context=()) -> np.ndarray:
        """P(· | context): vocab_size probabilities that sum to 1."""
        return self.next_token_distributions([context])[0]

    def sample(self, n: int, rng: np.random.Generator, max_new_tokens: int = 100, prompt=()) -> list[list[int]]:
        """n continuations of `prompt`, drawn token by token from the model (all n at once),
        each stopped just before its first end_id token or after max_new_tokens tokens."""
        prompt = list(as_ids(prompt, self.vocab_size))
        seqs = [list(prompt) for _ in range(n)]
        done = np.zeros(n, dtype=bool)
        for _ in range(max_new_tokens):
            live = np.flatnonzero(~done)
            if len(live) == 0:
                break
            probs = self.next_token_distributions([seqs[i] for i in live])
            cdf = np.cumsum(probs, axis=1)
            u = rng.random(len(live)) * cdf[:, -1]
            picks = np.minimum((cdf <= u[:, None]).sum(axis=1), self.vocab_size - 1)
            for i, token in zip(live, picks.tolist()):
                if token == self.end_id:
                    done[i] = True
                else:
                    seqs[i].append(token)
        return [s[len(prompt):] for s in seqs]


def fit_models(stream, vocab_size: int, orders, smoothings=("kneser-ney",), start_id: int = 0, end_id: int = 0,
               heldout_every: int = 20) -> dict:
    """{(smoothing, order): fitted NGramLM} for every pair, counting the stream (and its
    held-out split) once for all of them."""
    ids = as_ids(stream, vocab_size)
    orders = list(orders)
    top = max(max(orders), 1)
    counts = NGramCounts(ids, top, vocab_size, start_id)
    part, held = split_heldout(ids, heldout_every, end_id)
    tuning = (NGramCounts(part, top, vocab_size, start_id), held, {})   # the dict caches held-out lookups
    models = {}
    for smoothing in smoothings:
        for order in orders:
            model = NGramLM(order, vocab_size, smoothing, start_id=start_id, end_id=end_id,
                            heldout_every=heldout_every)
            models[smoothing, order] = model.fit_counts(counts, tuning)
    return models


def best_ngram(data, orders=None, smoothing: str = "kneser-ney", models=None):
    """The n-gram model with the lowest validation loss among `orders` (default 1 … the
    largest order 64-bit keys allow, 5 for 3,000 characters), fitted on data.train (with
    hyper-parameters from held-out training poems) and scored on the full data.val.

    `data` is a `train.PoemData` (vocab, train, val); `models`, a dict made by `fit_models`
    on data.train, is reused instead of fitting again. Returns a dict with "order",
    "val_loss", "model" and "val_losses" ({order: loss})."""
    V = len(data.vocab)
    orders = list(range(1, max_order(V) + 1)) if orders is None else list(orders)
    if models is None:
        models = fit_models(data.train, V, orders, (smoothing,))
    losses = {order: models[smoothing, order].cross_entropy(data.val) for order in orders}
    order = min(losses, key=lambda o: (losses[o], o))
    return {"order": order, "val_loss": losses[order], "model": models[smoothing, order], "val_losses": losses}


def best_ngram_val_loss(data, orders=None) -> float:
    """The validation loss (nats per character) of the best interpolated Kneser–Ney n-gram:
    the number a neural language model of the same data has to beat."""
    return best_ngram(data, orders)["val_loss"]
