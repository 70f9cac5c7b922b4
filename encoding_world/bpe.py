"""Byte-pair encoding (BPE, 字节对编码): a small tokenizer trained from scratch, written to be read.

Lesson 6 derives it step by step. The recipe:

1. **Pre-tokenize.** Cut the text into segments with the regular expression `PATTERN`: a run
   of word characters with at most one space in front (" cat", "秦川雄帝宅"), a run of
   punctuation, or a run of whitespace. The segments joined together give back the text
   exactly, and no token ever crosses a segment border. Chinese has no spaces, so a
   Chinese segment is a whole clause between punctuation marks.
2. **Base alphabet.** Every character seen in training is one token (Unicode characters,
   so Chinese works), sorted by code point. In front of them, by default, come 256 *byte
   tokens* `<0x00>` ... `<0xFF>` (byte fallback, 字节回退).
3. **Merges.** Count every adjacent pair of tokens over all segments (a segment that occurs
   n times counts n times); the most frequent pair becomes a new token, written into the
   `merges` list; repeat until the vocabulary has `vocab_size` tokens. Ties are broken by
   the smaller (left id, right id): the pair whose tokens entered the vocabulary first.
   Counts are updated incrementally (only the segments that contain the merged pair are
   touched) and a heap finds the largest count, so training stays fast.
4. **Encode.** Per segment: characters to ids, then repeatedly apply the adjacent pair
   with the lowest merge rank (the earliest learnt), leftmost first, until none applies.
5. **Decode.** Concatenate the tokens' strings.

Characters never seen in training: with `byte_fallback=True` (the default) such a
character is encoded as the byte tokens of its UTF-8 bytes (3 tokens for most Chinese
characters), and `decode` reassembles the bytes, so *every* string round-trips exactly.
With `byte_fallback=False`, `encode` raises a ValueError that names the character.

These rules (the regex, the alphabet sorted by code point after the special tokens, the
largest count first with ties to the smaller pair of ids, an existing string reusing its
id, merges applied by rank) are those of the Hugging Face `tokenizers` library's
`models.BPE` + `trainers.BpeTrainer` with `pre_tokenizers.Split(PATTERN, "isolated")` and the
byte tokens as special tokens; lesson 6 checks that both learn the same merges.
"""
from __future__ import annotations

import gc
import heapq
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

PATTERN = r" ?\w+| ?[^\w\s]+|\s+"
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
_BYTE_TOKEN_SET = frozenset(BYTE_TOKENS)


def pre_tokenize(text: str, pattern: str = PATTERN) -> list[str]:
    """Cut `text` into segments; `"".join(pre_tokenize(text)) == text` for the default pattern."""
    return re.findall(pattern, text)


def merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of `pair` in `ids`, scanning left to right, by `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """A trained BPE tokenizer: base alphabet + ordered merges. Make one with `train`.

    Attributes: `alphabet` (the characters, sorted), `merges` (list of (left, right)
    strings, in the order learnt), `merge_counts` (how often each pair occurred when it
    was learnt; None if not known), `vocab` (list: id -> token string), `token_to_id`.
    """

    def __init__(self, alphabet: Iterable[str], merges: Sequence[tuple[str, str]], *,
                 byte_fallback: bool = True, pattern: str = PATTERN,
                 merge_counts: Sequence[int] | None = None):
        self.alphabet = sorted(set(alphabet))
        if any(len(ch) != 1 for ch in self.alphabet):
            raise ValueError("the alphabet must consist of single characters")
        self.byte_fallback = byte_fallback
        self.pattern = pattern
        self._regex = re.compile(pattern)
        self.vocab: list[str] = (list(BYTE_TOKENS) if byte_fallback else []) + self.alphabet
        self.token_to_id = {token: i for i, token in enumerate(self.vocab)}
        self.merges: list[tuple[str, str]] = []
        self._rank: dict[tuple[int, int], int] = {}    # (left id, right id) -> merge rank
        self._merged_id: list[int] = []                # merge rank -> id of the new token
        for left, right in merges:
            if left not in self.token_to_id or right not in self.token_to_id:
                raise ValueError(f"merge {(left, right)!r} uses a token not made by earlier merges")
            pair = (self.token_to_id[left], self.token_to_id[right])
            new = left + right
            if byte_fallback and new in _BYTE_TOKEN_SET:
                raise ValueError(f"merge {(left, right)!r} would make {new!r}, the name of a byte token")
            if new not in self.token_to_id:            # the same string made twice keeps its id
                self.token_to_id[new] = len(self.vocab)
                self.vocab.append(new)
            self._rank[pair] = len(self.merges)        # a pair learnt twice: the later rank, as in `tokenizers`
            self._merged_id.append(self.token_to_id[new])
            self.merges.append((left, right))
        self.merge_counts = list(merge_counts) if merge_counts is not None else None
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, alphabet={len(self.alphabet)} characters, "
                f"merges={len(self.merges)}, byte_fallback={self.byte_fallback})")

    # --- encoding -------------------------------------------------------------------
    def _char_ids(self, segment: str) -> list[int]:
        try:
            return [self.token_to_id[ch] for ch in segment]
        except KeyError:
            pass
        ids = []
        for ch in segment:
            i = self.token_to_id.get(ch)
            if i is not None:
                ids.append(i)
            elif self.byte_fallback:
                ids.extend(ch.encode("utf-8"))         # byte b is token id b (<0xBB>)
            else:
                raise ValueError(f"character {ch!r} (U+{ord(ch):04X}) was not seen in training, so it "
                                 "has no token; train with byte_fallback=True to encode any text")
        return ids

    def _encode_segment(self, segment: str) -> list[int]:
        ids = self._char_ids(segment)
        rank, never = self._rank, len(self._merged_id)    # `never`: larger than every rank
        while len(ids) > 1:
            ranks = [rank.get(pair, never) for pair in zip(ids, ids[1:])]
            best = min(ranks)
            if best == never:                          # no adjacent pair is a merge
                break
            where = ranks.index(best)                  # the earliest-learnt merge, leftmost first
            ids[where:where + 2] = [self._merged_id[best]]
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`."""
        ids: list[int] = []
        cache = self._cache
        for segment in self._regex.findall(text):
            seg_ids = cache.get(segment)
            if seg_ids is None:
                seg_ids = self._encode_segment(segment)
                if len(cache) < 100_000:               # repeated segments are looked up, memory bounded
                    cache[segment] = seg_ids
            ids.extend(seg_ids)
        return ids

    def tokens(self, text: str) -> list[str]:
        """The token strings of `text` (byte tokens print as <0xE6> etc.)."""
        return [self.vocab[i] for i in self.encode(text)]

    # --- decoding -------------------------------------------------------------------
    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`: tokens' strings joined; runs of byte tokens decoded as UTF-8.

        A run of byte tokens that is not valid UTF-8 (never made by `encode`) decodes to
        U+FFFD replacement characters rather than failing.
        """
        pieces, pending = [], bytearray()
        for i in ids:
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"token id {i} is outside the vocabulary (0..{len(self.vocab) - 1})")
            if self.byte_fallback and i < 256:
                pending.append(i)
                continue
            if pending:
                pieces.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            pieces.append(self.vocab[i])
        if pending:
            pieces.append(pending.decode("utf-8", errors="replace"))
        return "".join(pieces)

    def truncated(self, vocab_size: int) -> BPETokenizer:
        """The tokenizer `train` would have returned for a smaller `vocab_size` (a prefix of the merges)."""
        base = len(self.alphabet) + (256 if self.byte_fallback else 0)
        if vocab_size < base:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the base vocabulary ({base} tokens)")
        seen, size, keep = set(self.alphabet), base, 0
        for left, right in self.merges:
            if size >= vocab_size:
                break
            if left + right not in seen:
                seen.add(left + right)
                size += 1
            keep += 1
        counts = self.merge_counts[:keep] if self.merge_counts is not None else None
        return BPETokenizer(self.alphabet, self.merges[:keep], byte_fallback=self.byte_fallback,
                            pattern=self.pattern, merge_counts=counts)


def train(texts: Iterable[str], vocab_size: int, *, byte_fallback: bool = True,
          pattern: str = PATTERN) -> BPETokenizer:
    """Learn BPE merges from `texts` until the vocabulary holds `vocab_size` tokens.

    The vocabulary is: 256 byte tokens (if `byte_fallback`), the characters of `texts`,
    then one new token per merge. Training stops early if no adjacent pair is left.
    """
    # Training builds many small lists and sets, none of which form reference cycles;
    # pausing Python's cycle collector meanwhile saves about a quarter of the time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _train(texts, vocab_size, byte_fallback, pattern)
    finally:
        if collecting:
            gc.enable()


def _train(texts, vocab_size, byte_fallback, pattern) -> BPETokenizer:
    segment_counts = Counter(seg for text in texts for seg in pre_tokenize(text, pattern))
    alphabet = sorted({ch for seg in segment_counts for ch in seg})
    vocab = (list(BYTE_TOKENS) if byte_fallback else []) + alphabet
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the base vocabulary "
                         f"({len(vocab)} tokens: {256 if byte_fallback else 0} bytes + {len(alphabet)} characters)")
    token_to_id = {token: i for i, token in enumerate(vocab)}

    # Each distinct segment once, as a list of token ids, with how often it occurs.
    words = [[token_to_id[ch] for ch in seg] for seg in segment_counts]
    freqs = list(segment_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)   # pair -> segments holding it
    for w, ids in enumerate(words):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += freqs[w]
            where[pair].add(w)

    # Max-heap by count (stored negated); equal counts pop the smaller pair of ids first.
    # An entry may be stale (its pair's count has since fallen): it is re-pushed when popped.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges, merge_counts = [], []
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -negative:
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        left, right = vocab[pair[0]], vocab[pair[1]]
        new_id = token_to_id.get(left + right)
        if new_id is None:
            new_id = token_to_id[left + right] = len(vocab)
            vocab.append(left + right)
        merges.append((left, right))
        merge_counts.append(count)

        grown = set()
        for w in sorted(where.pop(pair)):
            old = words[w]
            new = merge_pair(old, pair, new_id)
            if len(new) == len(old):                 # the pair left this segment earlier
                continue
            delta: dict[tuple[int, int], int] = defaultdict(int)
            for p in zip(old, old[1:]):
                delta[p] -= 1
            for p in zip(new, new[1:]):
                delta[p] += 1
            for p, d in delta.items():
                if d:
                    pair_counts[p] += d * freqs[w]
                    if d > 0:
                        where[p].add(w)
                        grown.add(p)
            words[w] = new
        del pair_counts[pair]
        for p in sorted(grown):
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    return BPETokenizer(alphabet, merges, byte_fallback=byte_fallback, pattern=pattern,
                        merge_counts=merge_counts)
