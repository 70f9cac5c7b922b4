"""Tests of encoding_world.word2vec: sampling, pairs, the model, training and evaluation."""
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from encoding_world.word2vec import (
    SkipGramNS,
    Vocab,
    WordVectors,
    analogy,
    analogy_accuracy,
    build_vocab,
    keep_probabilities,
    load_google_analogies,
    load_wordsim353,
    nearest,
    noise_distribution,
    skipgram_pairs,
    stable_hash,
    train_skipgram,
    unigram_table,
    wikipedia_sentences,
    wordsim_spearman,
)

# ----------------------------------------------------------------------------- vocabulary

def test_build_vocab_orders_by_count_then_first_seen_and_drops_rare_words():
    sentences = [["b", "a", "c", "a"], ["c", "d", "a", "b", "e"]]
    vocab = build_vocab(sentences, min_count=2)
    assert vocab.tokens == ["a", "b", "c"]          # a: 3; b and c: 2 each, b seen first
    assert vocab.counts.tolist() == [3, 2, 2]
    assert "d" not in vocab and vocab.id("c") == 2


def test_vocab_errors_name_the_problem():
    vocab = build_vocab([["x", "y", "x"]], min_count=1)
    with pytest.raises(KeyError, match="'kingg' is not in the vocabulary"):
        vocab.id("kingg")
    with pytest.raises(TypeError, match="list of words"):
        build_vocab(["a plain string"])
    with pytest.raises(ValueError, match="no word occurs 5"):
        build_vocab([["x", "y"]], min_count=5)
    with pytest.raises(ValueError, match="twice"):
        Vocab(["a", "a"], [1, 1])


def test_encode_drops_unknown_words_and_records_sentences():
    vocab = build_vocab([["a", "b", "a", "b"]], min_count=2)
    ids, sentence_ids = vocab.encode_corpus([["a", "zzz", "b"], ["b"]])
    assert ids.tolist() == [0, 1, 1]
    assert sentence_ids.tolist() == [0, 0, 1]
    assert vocab.encode(["a", "zzz", "b"]) == [0, 1] and vocab.decode([1, 0]) == ["b", "a"]


# ----------------------------------------------------------------------------- sampling

def test_keep_probabilities_follow_word2vec_formula():
    counts = np.array([10_000, 1_000, 10, 1])
    p = keep_probabilities(counts, sample=1e-3)
    t = 1e-3 * counts.sum()
    assert p[0] == pytest.approx((np.sqrt(counts[0] / t) + 1) * t / counts[0])
    assert p[2] == p[3] == 1.0                       # rare words are always kept
    assert np.all(np.diff(p) >= 0)                   # the more frequent, the more dropped
    assert np.array_equal(keep_probabilities(counts, sample=0), np.ones(4))
    with pytest.raises(ValueError, match="positive"):
        keep_probabilities([3, 0])


def test_keep_probabilities_equal_gensims():
    from gensim.models import Word2Vec

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    # A Zipf-like corpus: word i appears about 2000 / (i + 1) times.
    sentences = [list(rng.choice(words, size=100, p=(p := 1 / np.arange(1, 51)) / p.sum()))
                 for _ in range(200)]
    model = Word2Vec(min_count=1, sample=1e-2, workers=1, hashfxn=stable_hash)
    model.build_vocab(sentences)
    vocab = build_vocab(sentences, min_count=1)
    ours = keep_probabilities(vocab.counts, sample=1e-2)
    theirs = np.array([model.wv.get_vecattr(w, "sample_int") / 2**32 for w in vocab.tokens])
    assert np.allclose(ours, theirs, atol=1e-9)


def test_noise_distribution_and_table_give_counts_to_the_three_quarters():
    counts = np.array([800, 100, 10, 1])
    probs = noise_distribution(counts)
    assert probs.sum() == pytest.approx(1.0)
    assert probs[0] / probs[1] == pytest.approx(8 ** 0.75)
    table = unigram_table(probs, size=100_000)
    assert np.allclose(np.bincount(table, minlength=4) / len(table), probs, atol=1e-5)
    draws = table[np.random.default_rng(0).integers(0, len(table), size=400_000)]
    empirical = np.bincount(draws, minlength=4) / len(draws)
    assert np.abs(empirical - probs).max() < 0.003
    # The power flattens the distribution: rare words are drawn more than their share.
    assert probs[3] > counts[3] / counts.sum()
    with pytest.raises(ValueError, match="smaller than the vocabulary"):
        unigram_table(probs, size=3)


# ----------------------------------------------------------------------------- pairs

def _pairs_by_loops(ids, sentence_ids, reach):
    pairs = []
    for i in range(len(ids)):
        for j in range(i - reach[i], i + reach[i] + 1):
            if j != i and 0 <= j < len(ids) and sentence_ids[j] == sentence_ids[i]:
                pairs.append((int(ids[i]), int(ids[j])))
    return Counter(pairs)


@pytest.mark.parametrize("window", [1, 2, 5])
def test_skipgram_pairs_equal_a_loop_over_each_window(window):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 20, size=60)
    sentence_ids = np.repeat(np.arange(6), 10)
    centers, contexts = skipgram_pairs(ids, sentence_ids, window, np.random.default_rng(7))
    reach = np.random.default_rng(7).integers(1, window + 1, size=len(ids))
    assert Counter(zip(centers.tolist(), contexts.tolist())) == _pairs_by_loops(ids, sentence_ids, reach)


def test_skipgram_pairs_window_one_are_neighbours_within_a_sentence():
    centers, contexts = skipgram_pairs(np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1]), 1,
                                       np.random.default_rng(0))
    assert sorted(zip(centers.tolist(), contexts.tolist())) == [(0, 1), (1, 0), (2, 3), (3, 2)]
    with pytest.raises(ValueError, match="window"):
        skipgram_pairs(np.array([0, 1]), np.array([0, 0]), 0, np.random.default_rng(0))


# ----------------------------------------------------------------------------- model

def test_loss_equals_the_formula_and_skips_negatives_equal_to_the_context():
    torch.manual_seed(0)
    model = SkipGramNS(6, 4)
    torch.nn.init.normal_(model.context.weight)
    c, o, n = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([[0, 5], [4, 1]])
    loss = model(c, o, n)
    v, u = model.center.weight, model.context.weight
    sig = torch.sigmoid
    expected0 = -(torch.log(sig(u[3] @ v[1])) + torch.log(sig(-u[0] @ v[1])) + torch.log(sig(-u[5] @ v[1])))
    expected1 = -(torch.log(sig(u[4] @ v[2])) + torch.log(sig(-u[1] @ v[2])))   # negative 4 == context
    assert torch.allclose(loss, torch.stack([expected0, expected1]), atol=1e-6)


def _toy_corpus(seed=0, n=300):
    rng = np.random.default_rng(seed)
    animals, machines = ["cat", "dog"], ["car", "truck"]
    sentences = []
    for _ in range(n):
        if rng.random() < 0.5:
            sentences.append([str(rng.choice(animals)), "eats", "meat", "and", "sleeps", "on", "the", "sofa"])
        else:
            sentences.append([str(rng.choice(machines)), "burns", "fuel", "and", "drives", "on", "the", "road"])
    return sentences


def test_words_that_share_contexts_end_up_closer():
    result = train_skipgram(_toy_corpus(), dim=16, window=3, min_count=1, sample=0, epochs=10,
                            batch_size=512, lr=0.05, seed=0, cpu_threads=1)
    wv = result.word_vectors()
    assert wv.similarity("cat", "dog") > wv.similarity("cat", "car") + 0.3
    assert wv.similarity("car", "truck") > wv.similarity("truck", "dog") + 0.3
    assert nearest(wv, "cat", k=1)[0][0] == "dog"
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])


def test_training_repeats_exactly_for_a_seed():
    kwargs = dict(dim=8, window=2, min_count=1, sample=0, epochs=2, batch_size=128, seed=3)
    threads = torch.get_num_threads()
    a = train_skipgram(_toy_corpus(n=50), **kwargs, cpu_threads=1).vectors
    assert torch.get_num_threads() == threads            # the thread setting is restored
    b = train_skipgram(_toy_corpus(n=50), **kwargs, cpu_threads=2).vectors
    c = train_skipgram(_toy_corpus(n=50), **{**kwargs, "seed": 4}).vectors
    # Same seed, same vectors, whatever the number of threads; another seed differs.
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ----------------------------------------------------------------------------- evaluation

def _toy_vectors():
    words = ["man", "woman", "king", "queen", "apple", "pear"]
    vectors = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0],
                        [0, 0, 0, 1], [0, 0.2, 0, 1]], dtype=float)
    return WordVectors(words, vectors)


def test_word_vectors_are_unit_length_and_name_unknown_words():
    wv = _toy_vectors()
    assert np.allclose(np.linalg.norm(wv.vectors, axis=1), 1.0)
    swapped = wv.reordered(["woman", "man", "king", "queen", "apple", "pear"])
    assert np.array_equal(swapped["man"], wv["man"]) and swapped.tokens[0] == "woman"
    assert wv.similarity("man", "man") == pytest.approx(1.0)
    with pytest.raises(KeyError, match="'kingg' is not in the vocabulary"):
        nearest(wv, "kingg")
    with pytest.raises(KeyError, match="'quen'"):
        analogy(wv, "man", "king", "quen")
    with pytest.raises(ValueError, match="all-zero"):
        WordVectors(["a", "b"], np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="one vector row per word"):
        WordVectors(["a"], np.ones((2, 3)))


def test_analogy_on_hand_made_vectors():
    wv = _toy_vectors()
    assert analogy(wv, "man", "king", "woman", k=1)[0][0] == "queen"   # king - man + woman
    assert nearest(wv, "apple", k=1)[0][0] == "pear"
    questions = [("royal", "man", "king", "woman", "queen"),    # right
                 ("royal", "man", "woman", "king", "queen"),    # right
                 ("fruit", "man", "king", "woman", "pear"),     # wrong answer expected
                 ("fruit", "man", "king", "banana", "pear")]    # unknown word: skipped
    result = analogy_accuracy(wv, questions)
    assert (result.correct, result.questions_used, result.questions_skipped) == (2, 3, 1)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.by_section == {"royal": (2, 2), "fruit": (0, 1)}
    # With only the first 3 words allowed, every question uses a word beyond them.
    with pytest.raises(ValueError, match="first 3 words"):
        analogy_accuracy(wv, questions, restrict_vocab=3)


def test_wordsim_spearman_on_hand_made_vectors():
    wv = _toy_vectors()
    order = [("king", "queen"), ("man", "woman"), ("apple", "pear"), ("man", "apple")]
    sims = [wv.similarity(a, b) for a, b in order]
    agree = [(a, b, s) for (a, b), s in zip(order, sims)]
    disagree = [(a, b, -s) for (a, b), s in zip(order, sims)]
    assert wordsim_spearman(wv, agree).spearman == pytest.approx(1.0)
    assert wordsim_spearman(wv, disagree).spearman == pytest.approx(-1.0)
    result = wordsim_spearman(wv, agree + [("king", "banana", 5.0)])
    assert (result.pairs_used, result.pairs_skipped) == (4, 1)


def test_evaluation_equals_gensims_on_the_same_vectors(tmp_path):
    from gensim.models import KeyedVectors

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    kv = KeyedVectors(vector_size=8)
    kv.add_vectors(words, rng.normal(size=(40, 8)).astype(np.float32))
    wv = WordVectors.from_gensim(kv)
    # Words w40 to w44 have no vector: both evaluations must skip those pairs.
    pairs = [(f"w{i}", f"w{j}", float(rng.uniform(0, 10))) for i, j in rng.integers(0, 45, (60, 2))]
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs))
    theirs = kv.evaluate_word_pairs(str(pairs_file))
    ours = wordsim_spearman(wv, load_wordsim353(pairs_file))
    assert ours.spearman == pytest.approx(theirs[1][0], abs=1e-9)

    quads = rng.integers(0, 40, size=(300, 4))
    lines = [": one\n"] + [" ".join(words[i] for i in q) + "\n" for q in quads[:150]]
    lines += [": two\n"] + [" ".join(words[i] for i in q) + "\n" for q in quads[150:]]
    questions_file = tmp_path / "questions.txt"
    questions_file.write_text("".join(lines))
    for restrict in (40, 25):
        theirs, _ = kv.evaluate_word_analogies(str(questions_file), restrict_vocab=restrict)
        ours = analogy_accuracy(wv, load_google_analogies(questions_file), restrict_vocab=restrict)
        assert ours.accuracy == pytest.approx(theirs, abs=1e-12)


def test_benchmark_files_load_completely():
    pairs = load_wordsim353()
    questions = load_google_analogies()
    assert len(pairs) == 353 and ("tiger", "cat", 7.35) in pairs
    assert len(questions) == 19544
    assert len({q[0] for q in questions}) == 14
    assert questions[0] == ("capital-common-countries", "athens", "greece", "baghdad", "iraq")


# ----------------------------------------------------------------------------- corpus and hashing

def test_wikipedia_sentences_are_lower_case_pieces_of_bounded_length():
    sentences = wikipedia_sentences(max_words=200)
    lengths = np.array([len(s) for s in sentences])
    assert len(sentences) > 2000 and lengths.max() == 200
    assert (lengths < 200).sum() <= 110              # only each article's last piece is short
    assert all(w == w.lower() and 2 <= len(w) <= 15 for s in sentences[:50] for w in s)
    with pytest.raises(ValueError, match="max_words"):
        wikipedia_sentences(max_words=0)


def test_stable_hash_makes_gensim_repeat_across_processes():
    assert stable_hash("abc") == 891568578
    # The same function as stable_hash, defined in the child so it need not import torch.
    script = (
        "import zlib\n"
        "from gensim.models import Word2Vec\n"
        "s = [['a', 'b', 'c', 'd'], ['b', 'c', 'a', 'e']] * 20\n"
        "h = lambda text: zlib.crc32(text.encode('utf-8'))\n"
        "m = Word2Vec(s, vector_size=4, min_count=1, workers=1, seed=1, hashfxn=h)\n"
        "print(m.wv['a'].tobytes().hex())\n"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        outputs.add(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                   text=True, check=True).stdout)
    assert len(outputs) == 1
