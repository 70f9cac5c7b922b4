"""The from-scratch BPE tokenizer (encoding_world.bpe) behaves as documented."""
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from encoding_world.bpe import BYTE_TOKENS, PATTERN, BPETokenizer, merge_pair, pre_tokenize, train

CORPUS = [
    "the cat sat on the mat, the cat ate the rat.",
    "the hat of the cat is on the mat; that is that.",
    "春风又绿江南岸，明月何时照我还。",
    "春风得意马蹄疾，一日看尽长安花。",
    "江南好，风景旧曾谙。日出江花红胜火，春来江水绿如蓝。",
]
MIXED = "The cat 猫 sat under 明月 on 2024-05-01,\tthen\n\n  left!  终于 🐈 done…"


def test_pre_tokenize_is_lossless_and_keeps_one_leading_space():
    for text in [MIXED, "", "   ", "a  b", "\n\nx\t", "秦川雄帝宅，函谷壮皇居。", "don't stop"]:
        assert "".join(pre_tokenize(text)) == text
    assert pre_tokenize("the cat, 春风又绿。") == ["the", " cat", ",", " 春风又绿", "。"]


def test_merge_pair_scans_left_to_right():
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_pair([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 7) == [7, 3, 7]
    assert merge_pair([2, 1], (1, 2), 7) == [2, 1]


def test_round_trip_on_mixed_chinese_and_english_text():
    tok = train(CORPUS, 340)
    for text in CORPUS + [MIXED, "", " ", "明月 moon", "🐈‍⬛ and ℃"]:
        ids = tok.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    # merges really shorten frequent text: fewer tokens than characters
    assert len(tok.encode(CORPUS[0])) < len(CORPUS[0]) / 2


def test_first_merge_is_the_most_frequent_pair():
    # segments: "hug" x1, " hug" x2, " pug", " pun", " bun"; pairs: (u,g) 4, (h,u) 3, ...
    tok = train(["hug hug hug pug pun bun"], 256 + 8)
    assert tok.merges[0] == ("u", "g") and tok.merge_counts[0] == 4
    # and on a bigger corpus it equals a brute-force count of all adjacent pairs
    segments = Counter(s for text in CORPUS for s in pre_tokenize(text))
    pairs = Counter()
    for seg, n in segments.items():
        for a, b in zip(seg, seg[1:]):
            pairs[(a, b)] += n
    tok = train(CORPUS, 400)
    assert tok.merge_counts[0] == max(pairs.values())
    assert pairs[tok.merges[0]] == max(pairs.values())


def test_merges_follow_a_brute_force_recount_at_every_step():
    # a slow reference: recount every pair after each merge, ties to the earlier tokens
    words = Counter(tuple(s) for text in CORPUS for s in pre_tokenize(text))
    order = {t: i for i, t in enumerate(BYTE_TOKENS + sorted({c for w in words for c in w}))}
    expected = []
    for _ in range(40):
        pairs = Counter()
        for w, n in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += n
        best = min(pairs, key=lambda p: (-pairs[p], order[p[0]], order[p[1]]))
        expected.append(best)
        order.setdefault(best[0] + best[1], len(order))
        new_words = Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += n
        words = new_words
    tok = train(CORPUS, 10_000)
    assert tok.merges[:40] == expected


def test_vocab_size_is_respected():
    base = 256 + len({c for text in CORPUS for c in text})
    for size in (base, base + 1, base + 25, base + 60):
        tok = train(CORPUS, size)
        assert tok.vocab_size == size == len(tok.token_to_id)
        assert len(set(tok.vocab)) == tok.vocab_size
    # a tiny corpus runs out of pairs: training stops early instead of inventing tokens
    tok = train(["ab ab"], 10_000)
    assert tok.merges == [("a", "b"), (" ", "ab")] and tok.vocab_size == 256 + 3 + 2
    with pytest.raises(ValueError, match="smaller than the base vocabulary"):
        train(CORPUS, base - 1)


def test_without_byte_fallback_the_vocabulary_is_only_characters_and_merges():
    tok = train(CORPUS, 100, byte_fallback=False)
    assert tok.vocab[0] == " " and "<0x00>" not in tok.token_to_id
    assert tok.vocab_size == 100
    assert tok.decode(tok.encode(CORPUS[2])) == CORPUS[2]


def test_ties_are_broken_deterministically():
    # (" ", "c"), ("a", "b") and ("c", "d") all occur once: the pair of smaller ids wins,
    # and " " (U+0020) sorts before every letter
    assert train(["ab cd"], 256 + 5 + 1).merges == [(" ", "c")]
    # then (a, b) beats (" c", d): the new token " c" has the largest id of all
    assert train(["ab cd"], 256 + 5 + 3).merges == [(" ", "c"), ("a", "b"), (" c", "d")]
    # the order of the texts does not matter
    assert train(CORPUS, 350).merges == train(CORPUS[::-1], 350).merges


def test_training_does_not_depend_on_string_hashing():
    code = ("import json; from encoding_world.bpe import train; from tests.test_bpe import CORPUS; "
            "print(json.dumps(train(CORPUS, 380).merges, ensure_ascii=True))")
    runs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1] == [list(m) for m in train(CORPUS, 380).merges]


def test_unknown_characters_fall_back_to_utf8_bytes():
    tok = train(CORPUS, 340)
    assert "猫" not in tok.alphabet
    ids = tok.encode("猫")
    assert ids == list("猫".encode()) and tok.tokens("猫") == ["<0xE7>", "<0x8C>", "<0xAB>"]
    assert tok.decode(ids) == "猫"
    assert tok.decode(tok.encode("a🐈b")) == "a🐈b" and len(tok.encode("🐈")) == 4
    # invalid byte sequences (never produced by encode) decode to U+FFFD instead of failing
    assert tok.decode([0xE7, 0x8C]) == "\ufffd"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_unknown_characters_raise_a_clear_error_without_byte_fallback():
    tok = train(CORPUS, 100, byte_fallback=False)
    with pytest.raises(ValueError, match=r"'猫' \(U\+732B\) was not seen in training"):
        tok.encode("the 猫")


def test_encode_applies_merges_by_rank_and_reuses_ids_of_repeated_strings():
    tok = BPETokenizer("abc", [("b", "c"), ("a", "b")])
    assert tok.tokens("abc") == ["a", "bc"]         # (b, c) was learnt first
    tok = BPETokenizer("abc", [("a", "b"), ("ab", "c"), ("b", "c"), ("a", "bc")])
    assert tok.vocab[256:] == ["a", "b", "c", "ab", "abc", "bc"]
    assert tok.tokens("abc") == ["abc"] and tok.tokens("bca") == ["bc", "a"]
    with pytest.raises(ValueError, match="not made by earlier merges"):
        BPETokenizer("abc", [("ab", "c")])


def test_a_pair_learnt_twice_is_applied_at_its_later_rank():
    # (ab, c) is listed twice, so its rank (4, the later one) is not smaller than the number
    # of distinct pairs (4); it must still count as a merge
    merges = [("a", "b"), ("b", "c"), ("ab", "c"), ("x", "y"), ("ab", "c")]
    tok = BPETokenizer("abcxy", merges)
    assert tok.tokens("abc") == ["abc"] and tok.tokens("xy") == ["xy"]
    assert tok.decode(tok.encode("abcxyab")) == "abcxyab"


def test_truncated_equals_training_with_a_smaller_vocabulary():
    big = train(CORPUS, 420)
    for size in (313, 333, 400):
        small = train(CORPUS, size)
        cut = big.truncated(size)
        assert cut.merges == small.merges and cut.vocab == small.vocab
        assert cut.merge_counts == small.merge_counts


def test_same_merges_and_tokens_as_huggingface_tokenizers():
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(byte_fallback=True))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(PATTERN), behavior="isolated")
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=330, special_tokens=BYTE_TOKENS, show_progress=False)
    hf.train_from_iterator(CORPUS, trainer=trainer)
    ours = train(CORPUS, 330)
    hf_model = json.loads(hf.to_str())["model"]
    assert [tuple(m) for m in hf_model["merges"]] == ours.merges
    assert sorted(hf.get_vocab(), key=hf.get_vocab().get) == ours.vocab
    for text in CORPUS + ["明月 moon, the rat 猫"]:
        assert hf.encode(text).ids == ours.encode(text)
