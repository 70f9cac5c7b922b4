"""Bag of words and TF-IDF for Chinese, English and mixed text.

Lesson 1 (01_one_hot_bow_tfidf) writes these out step by step and checks them against
scikit-learn; later lessons import them from here.
"""
import re

import numpy as np
from scipy import sparse

from .text import tokenize_zh

_HAS_WORD_CHARACTER = re.compile(r"\w")


def words(text: str) -> list[str]:
    """Lower-cased words of Chinese, English or mixed text, punctuation dropped.

    jieba segments the Chinese and splits English at spaces and punctuation. Unlike
    scikit-learn's default `token_pattern`, one-character words (我, 爱, "i", "a") are kept.
    """
    return [w for w in tokenize_zh(text.lower()) if _HAS_WORD_CHARACTER.search(w)]


def idf_weights(counts, smooth_idf: bool = True) -> np.ndarray:
    """Inverse document frequency of each column of a documents x terms count matrix.

    smooth_idf=True: ln((1 + n) / (1 + df)) + 1, as if one extra document held every term;
    smooth_idf=False: ln(n / df) + 1. Both are scikit-learn's definitions.
    """
    counts = _dense(counts)
    n_docs = counts.shape[0]
    df = (counts > 0).sum(axis=0)
    if smooth_idf:
        return np.log((1 + n_docs) / (1 + df)) + 1
    if np.any(df == 0):
        raise ValueError("a term occurs in no document: its idf is infinite without smoothing")
    return np.log(n_docs / df) + 1


def tfidf_from_counts(counts, *, smooth_idf: bool = True, sublinear_tf: bool = False,
                      norm: str | None = "l2") -> np.ndarray:
    """TF-IDF weights (dense) from a documents x terms count matrix.

    Term frequency is the raw count, or 1 + ln(count) when sublinear_tf; each row is then
    scaled to unit length ("l2"), unit sum of absolute values ("l1"), or left as is (None).
    Equals scikit-learn's TfidfVectorizer with the same options.
    """
    counts = _dense(counts)
    tf = counts.astype(float)
    if sublinear_tf:
        present = tf > 0
        tf[present] = 1 + np.log(tf[present])
    weights = tf * idf_weights(counts, smooth_idf)
    if norm is None:
        return weights
    if norm == "l2":
        lengths = np.sqrt((weights ** 2).sum(axis=1, keepdims=True))
    elif norm == "l1":
        lengths = np.abs(weights).sum(axis=1, keepdims=True)
    else:
        raise ValueError(f"norm must be 'l2', 'l1' or None, got {norm!r}")
    # A document with no known word stays all zeros rather than becoming NaN.
    return np.divide(weights, lengths, out=np.zeros_like(weights), where=lengths > 0)


def zh_tfidf_vectorizer(**kwargs):
    """scikit-learn's TfidfVectorizer made ready for Chinese and mixed text: it splits with
    `words` (jieba, one-character words kept). Other options pass through to it."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(tokenizer=words, token_pattern=None, **kwargs)


def zh_count_vectorizer(**kwargs):
    """scikit-learn's CountVectorizer with the same Chinese-ready splitting as
    `zh_tfidf_vectorizer`."""
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(tokenizer=words, token_pattern=None, **kwargs)


def _dense(matrix) -> np.ndarray:
    if sparse.issparse(matrix):
        matrix = matrix.toarray()
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"expected a documents x terms matrix, got shape {matrix.shape}")
    return matrix
