"""A CLIP in miniature: an image encoder, a text encoder and the contrastive loss that
puts their vectors into one shared space.

Lesson 5 writes each piece out step by step and checks it equals the version kept here:

- `tokenize`: English words, single digits and single Chinese characters, so one small
  vocabulary covers captions in both languages (and captions that mix them).
- `Vocab`: token → row number (`tokens`, `index`, `encode`, `decode`, as every vocabulary of
  the book); `Vocab.encode_batch` turns captions into the flat token ids and offsets that
  `nn.EmbeddingBag` reads, skipping tokens it has never seen.
- `ImageEncoder`: a two-layer network from the 64 pixels of a digit to a unit vector.
- `TextEncoder`: a bag of word vectors, mean-pooled, then projected to a unit vector.
- `contrastive_loss`: the symmetric InfoNCE loss of CLIP, over a batch's similarity matrix.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["tokenize", "Vocab", "ImageEncoder", "TextEncoder", "contrastive_loss"]

# A run of Latin letters is a word; a digit or a CJK character is a token on its own;
# everything else (spaces, punctuation) only separates tokens.
_TOKEN = re.compile(r"[a-z]+|[0-9]|[\u4e00-\u9fff]")


def tokenize(text: str) -> list[str]:
    """Split a caption into tokens: lower-cased English words, single digits, single
    Chinese characters. "the digit 7" -> ['the', 'digit', '7']; "手写的数字七" ->
    ['手', '写', '的', '数', '字', '七']."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a string, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


class Vocab:
    """The tokens of a list of captions, each with a row number, in order of first appearance."""

    def __init__(self, texts: Iterable[str]):
        if isinstance(texts, str):
            raise TypeError("Vocab expects a list of captions, not one string")
        self.tokens: list[str] = []
        self.index: dict[str, int] = {}
        for text in texts:
            for token in tokenize(text):
                if token not in self.index:
                    self.index[token] = len(self.tokens)
                    self.tokens.append(token)
        if not self.tokens:
            raise ValueError("no tokens found in the captions: the vocabulary would be empty")

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def encode(self, text: str) -> list[int]:
        """Ids of the caption's tokens; tokens missing from the vocabulary are skipped (as a
        bag of words ignores unknown words)."""
        return [self.index[t] for t in tokenize(text) if t in self.index]

    def decode(self, ids) -> list[str]:
        """The tokens of a sequence of ids."""
        return [self.tokens[int(i)] for i in ids]

    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of all captions, one after the other, and where each caption starts.

        This is the input of `nn.EmbeddingBag`: caption i is ids[offsets[i]:offsets[i+1]].
        Tokens missing from the vocabulary are skipped (as a bag of words ignores unknown
        words); a caption with no known token at all raises a ValueError naming it.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a list of captions, not one string; wrap it: [text]")
        ids, offsets = [], []
        for text in texts:
            known = self.encode(text)
            if not known:
                raise ValueError(f"the caption {text!r} has no token in the vocabulary "
                                 f"({len(self)} tokens), so it has no vector")
            offsets.append(len(ids))
            ids.extend(known)
        if not offsets:
            raise ValueError("no captions given")
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


class ImageEncoder(nn.Module):
    """64 pixels -> hidden layer with ReLU -> `dim` numbers, scaled to length 1."""

    def __init__(self, n_pixels: int = 64, hidden: int = 128, dim: int = 32):
        super().__init__()
        self.n_pixels = n_pixels
        self.hidden = nn.Linear(n_pixels, hidden)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)                    # [batch, 8, 8] or [batch, 1, 8, 8] -> [batch, 64]
        if x.shape[1] != self.n_pixels:
            raise ValueError(f"images have {x.shape[1]} pixels each (shape {tuple(images.shape)}), "
                             f"this encoder expects {self.n_pixels}")
        return F.normalize(self.proj(F.relu(self.hidden(x))), dim=-1)


class TextEncoder(nn.Module):
    """Mean of the caption's token vectors (a bag of word vectors) -> linear projection to
    `dim` numbers, scaled to length 1. Takes the (ids, offsets) of `Vocab.encode_batch`."""

    def __init__(self, vocab_size: int, width: int = 32, dim: int = 32):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, width, mode="mean")
        self.proj = nn.Linear(width, dim)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.embedding.num_embeddings):
            raise ValueError(f"token ids must lie in [0, {self.embedding.num_embeddings}), "
                             f"got ids from {ids.min().item()} to {ids.max().item()}")
        return F.normalize(self.proj(self.embedding(ids, offsets)), dim=-1)


def contrastive_loss(image_vectors: torch.Tensor, text_vectors: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss for a batch of matching (image, text) pairs.

    Row i of both inputs belongs to pair i; the vectors should have length 1, so that
    `image_vectors @ text_vectors.T` holds cosine similarities. Divided by the temperature
    they are the logits of two classification problems: each image must pick its own text
    among the batch's texts (rows), and each text its own image (columns). The loss is the
    mean of the two cross-entropies.
    """
    if image_vectors.ndim != 2 or image_vectors.shape != text_vectors.shape:
        raise ValueError(f"image_vectors and text_vectors must both be [batch, dim] with the same "
                         f"shape, got {tuple(image_vectors.shape)} and {tuple(text_vectors.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    logits = image_vectors @ text_vectors.T / temperature      # [batch, batch]
    targets = torch.arange(len(logits), device=logits.device)  # pair i sits on the diagonal
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
