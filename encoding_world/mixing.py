"""Training on several data sources at once: one Dataset per source, and a mixing Dataset.

A real training project rarely learns from one corpus. It keeps one dataset class per
source (each knows how to read its own files and cut them into examples) and one mixing
dataset that, for every example it hands out, first picks a source with given *sampling
rates* and then an example from that source. LISA's ``HybridDataset`` with
``--sample_rates 9,3,3,1`` is such a mixer; lesson 18 writes this one out step by step.

* ``PoemWindows`` — fixed-length windows of character ids cut from poems, as (input,
  target) pairs for next-character prediction; ``PoemWindows.tang`` / ``PoemWindows.song``
  build one over the Tang poems or the Song ci (training or validation split).
* ``MixedDataset`` — draws ``num_samples`` (source, item) pairs from a seed, so the same
  seed always gives the same mixture, in any order and with any DataLoader.
* ``draw_plan`` — the drawing itself, as a function of rates, sizes and a generator.
* ``empirical_shares`` / ``MixedDataset.report()`` — how often each source was drawn.

Rates are relative weights and are normalised by their sum: ``[3, 1]`` and
``[0.75, 0.25]`` give the same mixture. A rate may be 0 (the source is never drawn), but
not negative, and at least one must be positive.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import Dataset

from .data import Poem, load_song_ci, load_tang_poems
from .lm_data import CharVocab, encode_poems, split_poems

__all__ = ["PoemWindows", "MixedDataset", "normalise_rates", "parse_rates", "draw_plan",
           "empirical_shares"]


# ------------------------------------------------------------------ one dataset per source

class PoemWindows(Dataset):
    """Windows of `block_size` + 1 character ids, one every block_size ids of a stream of
    poems (so the inputs x of consecutive windows do not overlap).

    The poems are encoded with `vocab` into one stream (each body followed by END, as
    ``lm_data.encode_poems`` does) and cut at 0, block_size, 2·block_size, ...; item i is
    ``(x, y)`` with ``y`` the stream shifted by one character, both of length block_size.
    These are exactly the windows of ``lm_data.consecutive_windows``, one at a time.
    """

    def __init__(self, poems: Sequence[Poem], vocab: CharVocab, block_size: int, name: str = "poems"):
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.name = name
        self.block_size = block_size
        self.num_poems = len(poems)
        self.stream = encode_poems(poems, vocab) if poems else torch.zeros(0, dtype=torch.long)

    @classmethod
    def tang(cls, vocab: CharVocab, block_size: int, split: str = "train", poems=None,
             name: str | None = None) -> PoemWindows:
        """Windows over the Tang poems' training or validation split (lm_data.split_poems).
        Pass `poems` (e.g. load_tang_poems(), or a selection of it) to avoid reading the
        file again."""
        return cls(_split(poems if poems is not None else load_tang_poems(), split), vocab, block_size,
                   name=name or f"tang/{split}")

    @classmethod
    def song(cls, vocab: CharVocab, block_size: int, split: str = "train", poems=None,
             name: str | None = None) -> PoemWindows:
        """Windows over the Song ci's training or validation split (or those of `poems`)."""
        return cls(_split(poems if poems is not None else load_song_ci(), split), vocab, block_size,
                   name=name or f"song/{split}")

    def __len__(self) -> int:
        return max(0, (len(self.stream) - 1) // self.block_size)

    def __getitem__(self, i: int):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range for {self.name!r} ({n} windows)")
        start = (i % n) * self.block_size
        window = self.stream[start:start + self.block_size + 1]
        return window[:-1], window[1:]

    def __repr__(self) -> str:
        return (f"PoemWindows({self.name!r}: {self.num_poems} poems, {len(self.stream)} characters, "
                f"{len(self)} windows of {self.block_size})")


def _split(poems, split: str):
    train, val = split_poems(poems)
    if split == "train":
        return train
    if split in ("val", "validation"):
        return val
    raise ValueError(f"split must be 'train' or 'val', got {split!r}")


# ------------------------------------------------------------------------------ the rates

def normalise_rates(rates, num_sources: int | None = None) -> torch.Tensor:
    """Rates as probabilities (float64, summing to 1), after checking them.

    Raises ValueError when a rate is negative, NaN or infinite, when all are zero, or when
    `num_sources` is given and the number of rates differs from it.
    """
    values = [float(r) for r in rates]
    if num_sources is not None and len(values) != num_sources:
        raise ValueError(f"got {len(values)} sampling rates for {num_sources} sources: "
                         f"give exactly one rate per source")
    if not values:
        raise ValueError("no sampling rates given")
    bad = [r for r in values if not math.isfinite(r) or r < 0]
    if bad:
        raise ValueError(f"sampling rates must be finite and >= 0, got {values}")
    total = math.fsum(values)
    if total <= 0:
        raise ValueError(f"sampling rates sum to zero ({values}): at least one source needs a positive rate")
    return torch.tensor(values, dtype=torch.float64) / total


def parse_rates(text: str) -> list[float]:
    """Command-line rates such as "9,3,3,1" (LISA's --sample_rates) as a list of floats."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"sampling rates are numbers separated by commas, e.g. '3,1', got {text!r}") from None


# ----------------------------------------------------------------------------- the drawing

def draw_plan(rates, sizes, num_samples: int, generator: torch.Generator):
    """Draw `num_samples` (source, item) pairs: a source with probability rate / sum(rates),
    then one of its `sizes[source]` items uniformly.

    Two streams of uniform numbers in [0, 1) come from `generator`, first one for the
    sources, then one for the items. Draw d goes to the first source whose cumulative
    probability exceeds u[d] (inverse-CDF sampling); its item is floor(v[d] · size).
    Returns two long tensors of length num_samples: source ids and item ids.
    """
    sizes = torch.as_tensor(list(sizes), dtype=torch.long)
    probs = normalise_rates(rates, len(sizes))
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    empty = [k for k in range(len(sizes)) if sizes[k] <= 0 and probs[k] > 0]
    if empty:
        raise ValueError(f"source(s) {empty} have no items but a positive rate")
    cumulative = probs.cumsum(0)
    cumulative = cumulative / cumulative[-1]          # the last entry is exactly 1.0
    u = torch.rand(num_samples, generator=generator, dtype=torch.float64)
    v = torch.rand(num_samples, generator=generator, dtype=torch.float64)
    sources = torch.searchsorted(cumulative, u, right=True)   # first k with cumulative[k] > u
    items = (v * sizes[sources].to(torch.float64)).floor().long()
    return sources, items


def empirical_shares(source_ids: torch.Tensor, num_sources: int) -> torch.Tensor:
    """The fraction of draws that went to each source (float64, sums to 1)."""
    if len(source_ids) == 0:
        raise ValueError("no draws to count")
    counts = torch.bincount(source_ids, minlength=num_sources)
    return counts.to(torch.float64) / len(source_ids)


# ------------------------------------------------------------------------ the mixing dataset

class MixedDataset(Dataset):
    """A mixture of datasets, drawn by sampling rates: LISA's HybridDataset, reproducibly.

    ``sources`` maps names to datasets; ``rates`` holds one non-negative weight per source
    (a sequence in the same order, or a mapping by name) and is normalised by its sum.
    Item d of the mixture is item ``item_ids[d]`` of source ``source_ids[d]``, both drawn
    once, from `seed`, when the dataset is built (see ``draw_plan``): ``mixed[d]`` is the
    same whatever order it is asked in, so a DataLoader (shuffled or not, any number of
    workers) sees the same mixture every time. With ``return_source=True`` an item
    becomes ``(item, source_id)``. A new epoch with fresh draws is a new MixedDataset with
    another seed.
    """

    def __init__(self, sources: Mapping[str, Dataset], rates, num_samples: int, seed: int = 0,
                 return_source: bool = False):
        if not isinstance(sources, Mapping) or not sources:
            raise ValueError("sources must be a non-empty mapping from names to datasets")
        self.names = list(sources)
        self.sources = [sources[name] for name in self.names]
        if isinstance(rates, Mapping):
            if set(rates) != set(self.names):
                raise ValueError(f"rates are named {sorted(rates)}, sources {sorted(self.names)}: "
                                 f"name every source exactly once")
            rates = [rates[name] for name in self.names]
        self.rates = normalise_rates(rates, len(self.sources))
        self.sizes = [len(ds) for ds in self.sources]
        empty = [name for name, size in zip(self.names, self.sizes) if size == 0]
        if empty:
            raise ValueError(f"source(s) {empty} are empty: every source needs at least one item "
                             f"(drop it, or check how it was built)")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.seed = seed
        self.return_source = return_source
        generator = torch.Generator().manual_seed(seed)
        self.source_ids, self.item_ids = draw_plan(rates, self.sizes, num_samples, generator)

    def __len__(self) -> int:
        return len(self.source_ids)

    def locate(self, d: int) -> tuple[str, int]:
        """(source name, item index) of draw d."""
        return self.names[int(self.source_ids[d])], int(self.item_ids[d])

    def __getitem__(self, d: int):
        if not -len(self) <= d < len(self):
            raise IndexError(f"draw {d} out of range for a mixture of {len(self)} draws")
        k = int(self.source_ids[d])
        item = self.sources[k][int(self.item_ids[d])]
        return (item, k) if self.return_source else item

    def shares(self) -> dict[str, float]:
        """The fraction of this mixture's draws that come from each source."""
        shares = empirical_shares(self.source_ids, len(self.sources))
        return {name: float(s) for name, s in zip(self.names, shares)}

    def report(self) -> list[dict]:
        """One row per source: its size, rate, number of draws, empirical share, and how
        many times over the source is read (draws / size: above 1 means repetition)."""
        counts = torch.bincount(self.source_ids, minlength=len(self.sources)).tolist()
        return [{"source": name, "size": size, "rate": float(rate), "draws": count,
                 "share": count / len(self), "passes": count / size}
                for name, size, rate, count in zip(self.names, self.sizes, self.rates, counts)]

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {float(r):.3f}" for n, r in zip(self.names, self.rates))
        return f"MixedDataset({len(self)} draws, seed {self.seed}; rates {parts})"
