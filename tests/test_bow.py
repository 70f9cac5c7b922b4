"""Unit tests for encoding_world.bow: our TF-IDF must equal scikit-learn's."""
import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from encoding_world.bow import idf_weights, tfidf_from_counts, words, zh_count_vectorizer, zh_tfidf_vectorizer

DOCS = [
    "我爱北京天安门",
    "北京是中国的首都，也是一座历史名城。",
    "我喜欢喝茶，我也喜欢喝咖啡。",
    "I like tea. I like coffee a lot, a lot!",
    "Beijing is the capital of China.",
]


def test_words_segments_chinese_and_keeps_one_character_words():
    assert words("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert words("I love Beijing, 我爱北京!") == ["i", "love", "beijing", "我", "爱", "北京"]
    assert words("。，!?") == []


@pytest.mark.parametrize("smooth_idf", [True, False])
@pytest.mark.parametrize("sublinear_tf", [True, False])
@pytest.mark.parametrize("norm", ["l2", "l1", None])
def test_tfidf_from_counts_equals_sklearn(smooth_idf, sublinear_tf, norm):
    counts = CountVectorizer(tokenizer=words, token_pattern=None).fit_transform(DOCS)
    ours = tfidf_from_counts(counts, smooth_idf=smooth_idf, sublinear_tf=sublinear_tf, norm=norm)
    theirs = TfidfVectorizer(tokenizer=words, token_pattern=None, smooth_idf=smooth_idf,
                             sublinear_tf=sublinear_tf, norm=norm).fit_transform(DOCS).toarray()
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs, rtol=0, atol=1e-12)


def test_idf_by_hand():
    counts = np.array([[2, 1, 0], [0, 1, 0], [1, 1, 3]])
    # df = 2, 3, 1 over n = 3 documents
    expected = np.log(4 / np.array([3, 4, 2])) + 1
    assert np.allclose(idf_weights(counts), expected)
    assert np.allclose(idf_weights(counts, smooth_idf=False), np.log(3 / np.array([2, 3, 1])) + 1)
    assert idf_weights(counts)[1] == pytest.approx(1.0)  # a term in every document keeps weight 1


def test_empty_document_gives_zero_row_not_nan():
    counts = np.array([[1, 0], [0, 0], [2, 1]])
    weights = tfidf_from_counts(counts)
    assert np.all(np.isfinite(weights))
    assert np.all(weights[1] == 0)
    assert np.allclose(np.linalg.norm(weights[[0, 2]], axis=1), 1)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        tfidf_from_counts(np.ones((2, 2)), norm="max")
    with pytest.raises(ValueError):
        tfidf_from_counts(np.ones(3))
    with pytest.raises(ValueError):
        idf_weights(np.array([[1, 0]]), smooth_idf=False)


def test_zh_vectorizers_keep_one_character_words():
    default = CountVectorizer().fit(["我 爱 北京"])
    assert list(default.get_feature_names_out()) == ["北京"]  # the trap the lesson shows
    counts = zh_count_vectorizer().fit(["我爱北京"])
    assert list(counts.get_feature_names_out()) == ["北京", "我", "爱"]
    tfidf = zh_tfidf_vectorizer(norm=None).fit(DOCS)
    assert {"我", "爱", "i", "a"} <= set(tfidf.get_feature_names_out())
