import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity as sk_cosine

import encoding_world as ew


def test_cosine_similarity_equals_sklearn():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7))
    assert np.allclose(ew.cosine_similarity(a, b), sk_cosine(a, b), atol=1e-12)


def test_cosine_similarity_of_zero_vector_is_zero_not_nan():
    sims = ew.cosine_similarity([[0.0, 0.0], [1.0, 0.0]], [[1.0, 1.0]])
    assert sims[0, 0] == 0.0 and np.isclose(sims[1, 0], 1 / np.sqrt(2))


def test_cosine_similarity_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 and 2"):
        ew.cosine_similarity([1, 2, 3], [1, 2])


def test_top_k_orders_best_first_and_breaks_ties_by_index():
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    assert ew.top_k(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]
    with pytest.raises(ValueError, match="between 1 and 4"):
        ew.top_k(scores, 5)


def test_tokenize_zh_segments_words_and_keeps_one_character_words(capfd):
    assert ew.tokenize_zh("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert ew.tokenize_zh("  ") == []
    assert "prefix dict" not in capfd.readouterr().err
