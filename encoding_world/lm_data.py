"""Character-level language-model data from the Tang poems: vocabulary, splits, batches.

Lessons 10 (n-grams), 12 (the mini-GPT) and 15 (LoRA) use the same vocabulary and the same
train/validation split, so their losses are comparable, in nats per character.
Chinese is modelled character by character: a character is close to a morpheme, the
poems' lines have fixed character counts, and a few thousand characters cover almost all
of the text, so no word segmenter or subword merges are needed.
"""
import operator
from collections import Counter

import torch

from .checks import check_ids, check_int

END = "\n"      # ends a poem; the model learns when to stop
UNKNOWN = "□"   # every character outside the vocabulary (the corpora never contain □ itself)


class CharVocab:
    """Characters ⇄ ids. Ids 0 and 1 are END and UNKNOWN; the rest in order of frequency."""

    def __init__(self, chars):
        self.chars = [END, UNKNOWN] + [c for c in chars if c not in (END, UNKNOWN)]
        self.index = {c: i for i, c in enumerate(self.chars)}
        if len(self.index) != len(self.chars):
            raise ValueError("characters of a vocabulary must be distinct")

    @classmethod
    def build(cls, texts, size: int) -> "CharVocab":
        """The size − 2 most frequent characters of `texts` (ties broken by code point)."""
        if size < 3:
            raise ValueError(f"a vocabulary needs at least 3 entries, got size={size}")
        counts = Counter()
        for text in texts:
            counts.update(text)
        ranked = sorted(counts, key=lambda c: (-counts[c], c))
        return cls([c for c in ranked if c not in (END, UNKNOWN)][: size - 2])

    def __len__(self) -> int:
        return len(self.chars)

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
            chars.append(self.chars[i])
        return "".join(chars)


def split_poems(poems, val_every: int = 20):
    """Every val_every-th poem goes to validation, the rest to training."""
    check_int("val_every", val_every, low=2)
    val = [p for i, p in enumerate(poems) if i % val_every == val_every - 1]
    train = [p for i, p in enumerate(poems) if i % val_every != val_every - 1]
    return train, val


def encode_poems(poems, vocab: CharVocab) -> torch.Tensor:
    """One long stream of ids: each poem's body followed by END."""
    ids = []
    for poem in poems:
        ids.extend(vocab.encode(poem.body + END))
    return torch.tensor(ids, dtype=torch.long)


def random_batch(data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator):
    """Inputs and next-token targets from batch_size random windows of the stream."""
    check_int("batch_size", batch_size, low=1)
    check_int("block_size", block_size, low=1)
    if len(data) <= block_size:
        raise ValueError(f"the stream ({len(data)} tokens) is shorter than a window ({block_size} + 1)")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + 1 + block_size] for s in starts.tolist()])
    return x, y


def consecutive_batches(data: torch.Tensor, batch_size: int, block_size: int, max_windows: int | None = None):
    """Non-overlapping windows covering the stream in order (for a deterministic evaluation);
    none when the stream is shorter than one window of block_size + 1."""
    check_int("batch_size", batch_size, low=1)
    check_int("block_size", block_size, low=1)
    n = (len(data) - 1) // block_size
    if max_windows is not None:
        n = min(n, max_windows)
    starts = list(range(0, n * block_size, block_size))
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        yield (torch.stack([data[s:s + block_size] for s in chunk]),
               torch.stack([data[s + 1:s + 1 + block_size] for s in chunk]))
