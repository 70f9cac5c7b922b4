"""Text helpers used by several lessons: Chinese word segmentation and vector search."""
import logging

import numpy as np


def tokenize_zh(text: str) -> list[str]:
    """Split Chinese text into words with jieba (precise mode), dropping whitespace tokens.

    jieba logs to stderr when it first loads its dictionary; that note is silenced here
    because it is noise, not a warning about the data.
    """
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [w for w in jieba.lcut(text) if w.strip()]


def cosine_similarity(a, b) -> np.ndarray:
    """Cosine similarity between the rows of `a` and the rows of `b` (1-D inputs allowed).

    Rows of all zeros (a document sharing no word with the vocabulary) have similarity 0
    with everything rather than NaN.
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"vectors differ in length: {a.shape[1]} and {b.shape[1]}")
    a_norm = np.linalg.norm(a, axis=1, keepdims=True)
    b_norm = np.linalg.norm(b, axis=1, keepdims=True)
    a = np.divide(a, a_norm, out=np.zeros_like(a), where=a_norm > 0)
    b = np.divide(b, b_norm, out=np.zeros_like(b), where=b_norm > 0)
    return a @ b.T


def top_k(scores, k: int) -> np.ndarray:
    """Indices of the k highest scores in each row, best first; ties go to the lower index."""
    scores = np.atleast_2d(np.asarray(scores))
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be between 1 and {scores.shape[1]} (the number of items), got {k}")
    # A stable sort of the negated scores keeps equal scores in index order.
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]
