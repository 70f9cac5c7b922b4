"""Character-level language-model data from the Tang poems: vocabulary, splits, batches,
and the held-out windows a model is scored on.

Lessons 10 (n-grams), 12 (the mini-GPT) and 15 (LoRA) use the same vocabulary and the same
train/validation split, so their losses are comparable, in nats per character.
Chinese is modelled character by character: a character is close to a morpheme, the
poems' lines have fixed character counts, and a few thousand characters cover almost all
of the text, so no word segmenter or subword merges are needed.
"""
import operator
from collections import Counter

import torch

from .checks import IGNORE_INDEX, check_ids, check_int

END = "\n"      # ends a poem; the model learns when to stop
UNKNOWN = "□"   # every character outside the vocabulary (the corpora never contain □ itself)


class CharVocab:
    """Characters ⇄ ids. Ids 0 and 1 are END and UNKNOWN; the rest in order of frequency.

    Like every vocabulary of the book: `tokens` (id → token), `index` (token → id),
    `encode` and `decode`.
    """

    def __init__(self, chars, end: str = END):
        self.end = end
        self.tokens = [end, UNKNOWN] + [c for c in chars if c not in (end, UNKNOWN)]
        self.index = {c: i for i, c in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("characters of a vocabulary must be distinct")

    @classmethod
    def build(cls, texts, size: int, end: str = END) -> "CharVocab":
        """The size − 2 most frequent characters of `texts` (ties broken by code point).

        `end` is the token that ends a document (id 0): END, a newline, for texts of one
        line each such as the poems; another character where documents hold newlines."""
        if size < 3:
            raise ValueError(f"a vocabulary needs at least 3 entries, got size={size}")
        counts = Counter()
        for text in texts:
            counts.update(text)
        ranked = sorted(counts, key=lambda c: (-counts[c], c))
        return cls([c for c in ranked if c not in (end, UNKNOWN)][: size - 2], end=end)

    @classmethod
    def from_tokens(cls, tokens) -> "CharVocab":
        """The vocabulary whose `tokens` list this is (as a checkpoint stores it)."""
        tokens = list(tokens)
        if len(tokens) < 2 or tokens[1] != UNKNOWN or not all(isinstance(t, str) and len(t) == 1 for t in tokens):
            raise ValueError(f"not the token list of a CharVocab (it must be single characters, the end token "
                             f"first and {UNKNOWN!r} second): {tokens[:5]!r}…")
        return cls(tokens[2:], end=tokens[0])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token) -> bool:
        return token in self.index

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Ids of the characters; characters outside the vocabulary become UNKNOWN, or raise
        a KeyError naming them when strict."""
        if strict:
            missing = sorted({c for c in text if c not in self.index})
            if missing:
                raise KeyError(f"not in the vocabulary: {''.join(missing)!r}")
        unknown = self.index[UNKNOWN]
        return [self.index.get(c, unknown) for c in text]

    def decode(self, ids) -> str:
        """The text of a sequence of ids (a list, or a 1-D tensor); an id that is not an
        integer in 0 … len − 1 raises an error naming it (a negative one would otherwise
        count from the end of the vocabulary)."""
        if isinstance(ids, torch.Tensor):
            ids = check_ids("ids", ids, len(self), layout="[len]").tolist()
        chars = []
        for i in ids:
            try:
                if isinstance(i, bool):
                    raise TypeError
                i = operator.index(i)          # ints, NumPy integers, 0-d integer tensors
            except TypeError:
                raise TypeError(f"ids must be integer token ids, got {i!r} ({type(i).__name__})") from None
            if not 0 <= i < len(self):
                raise ValueError(f"token id {i} out of range 0..{len(self) - 1}")
            chars.append(self.tokens[i])
        return "".join(chars)


def split_poems(poems, val_every: int = 20):
    """Every val_every-th poem goes to validation, the rest to training."""
    check_int("val_every", val_every, low=2)
    val = [p for i, p in enumerate(poems) if i % val_every == val_every - 1]
    train = [p for i, p in enumerate(poems) if i % val_every != val_every - 1]
    return train, val


def encode_poems(poems, vocab: CharVocab) -> torch.Tensor:
    """One long stream of ids: each poem's body followed by END."""
    return encode_documents((poem.body for poem in poems), vocab)


def encode_documents(texts, vocab: CharVocab) -> torch.Tensor:
    """One long stream of ids: each text followed by the vocabulary's end token (id 0)."""
    ids = []
    for text in texts:
        ids.extend(vocab.encode(text))
        ids.append(0)
    return torch.tensor(ids, dtype=torch.long)


def windows(data: torch.Tensor, block_size: int, starts) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [len(starts), block_size] read from each start, and the targets: the same
    windows shifted one token to the right."""
    starts = list(starts)
    return (torch.stack([data[s:s + block_size] for s in starts]),
            torch.stack([data[s + 1:s + 1 + block_size] for s in starts]))


def _check_window(data: torch.Tensor, block_size: int) -> None:
    check_int("block_size", block_size, low=1)
    if len(data) <= block_size:
        raise ValueError(f"the stream ({len(data)} tokens) is shorter than a window ({block_size} + 1)")


def random_batch(data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator,
                 rows: slice | None = None):
    """Inputs and next-token targets from batch_size random windows of the stream.

    With `rows`, only those rows of the batch are built (the generator draws all batch_size
    starts either way): how each process of a data-parallel run takes its share of one
    global batch that every process draws alike."""
    check_int("batch_size", batch_size, low=1)
    _check_window(data, block_size)
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    return windows(data, block_size, starts[rows if rows is not None else slice(None)].tolist())


def random_batches(data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator,
                   rows: slice | None = None):
    """random_batch after random_batch, for ever: the training batches of a language model.
    The generator's state is the position in this stream (save it to resume)."""
    while True:
        yield random_batch(data, batch_size, block_size, generator, rows)


def consecutive_windows(data: torch.Tensor, block_size: int, max_windows: int | None = None):
    """The stream cut into non-overlapping windows, in order: (inputs, targets), each
    [n, block_size]; at most max_windows of them. A deterministic validation set."""
    _check_window(data, block_size)
    n = (len(data) - 1) // block_size
    if max_windows is not None:
        n = min(n, check_int("max_windows", max_windows, low=1))
    return windows(data, block_size, range(0, n * block_size, block_size))


def fixed_windows(data: torch.Tensor, block_size: int, n: int):
    """n windows spread evenly over the whole stream, first and last included: a small
    validation set that samples every part of the text (lesson 15 and bench/lora_sweep.py)."""
    _check_window(data, block_size)
    check_int("n", n, low=1)
    return windows(data, block_size, torch.linspace(0, len(data) - block_size - 1, n).long().tolist())


@torch.no_grad()
def mean_loss(model, windows: tuple[torch.Tensor, torch.Tensor], batch_size: int = 256) -> float:
    """The model's mean cross-entropy (nats per token) on (inputs, targets) windows, scored
    batch_size windows at a time, in eval mode (the model's mode is restored afterwards).
    Targets equal to IGNORE_INDEX count for nothing (lesson 16's masked prompts): the mean
    is over the targets that count, each weighing the same whatever its batch.

    Always in float32, even where training autocasts to bf16 or float16: evaluation costs
    little, and a loss that a GPU reports then agrees with a CPU's to rounding error.
    """
    x, y = windows
    check_int("batch_size", batch_size, low=1)
    if len(x) == 0:
        raise ValueError("no window to score: the validation stream is shorter than one window")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        counted = (yb != IGNORE_INDEX).sum().item()
        if counted:                            # a batch of ignored targets only has a NaN loss
            total += model(xb, yb)[1].item() * counted
            count += counted
    model.train(was_training)
    if count == 0:
        raise ValueError(f"no target to score: every target is IGNORE_INDEX ({IGNORE_INDEX})")
    return total / count
