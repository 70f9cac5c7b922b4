"""Word vectors: skip-gram with negative sampling (word2vec) in plain PyTorch, and the code
that scores any set of word vectors (ours or gensim's) in exactly the same way.

Lesson 3 writes each piece out step by step and checks it equals the version kept here:

- `build_vocab`, `Vocab`: words kept at least `min_count` times, most frequent first.
- `keep_probabilities`: word2vec's subsampling of frequent words.
- `noise_distribution`, `unigram_table`: negatives drawn from unigram counts ** 0.75.
- `skipgram_pairs`: (center, context) pairs from a randomly shrunk window, vectorised.
- `SkipGramNS`, `train_skipgram`: the model, its loss and the training loop.
- `WordVectors`, `nearest`, `analogy`, `wordsim_spearman`, `analogy_accuracy`: evaluation
  shared by every set of vectors, with `WordVectors.from_gensim` for gensim's.
- `wikipedia_sentences`, `stable_hash`: the English corpus, and a hash that makes gensim
  repeat exactly across Python processes.
"""
from __future__ import annotations

import bz2
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checks import check_int, check_number

# The English text shipped inside gensim: a shortened dump of English Wikipedia.
WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


# --------------------------------------------------------------------------- corpus

def stable_hash(text: str) -> int:
    """A hash of a string that is the same in every Python process (CRC-32 of its UTF-8).

    gensim seeds each word's starting vector with `hashfxn(word + str(seed))`; Python's own
    `hash` of a string changes from process to process (PYTHONHASHSEED), so pass this one
    as `Word2Vec(..., hashfxn=stable_hash)` to make gensim's results repeat.
    """
    return zlib.crc32(text.encode("utf-8"))


def wikipedia_sentences(path=None, max_words: int = 1000, min_article_words: int = 50) -> list[list[str]]:
    """Lower-cased word lists from gensim's shortened English Wikipedia dump.

    Articles are cleaned of wiki markup and tokenised the way gensim's `WikiCorpus` does
    (same functions, run in this process rather than in a worker pool), stubs shorter than
    `min_article_words` are dropped, and each article is cut into pieces of at most
    `max_words` words, because gensim's `Word2Vec` silently ignores words past the 10,000th
    of a "sentence".
    """
    from gensim.corpora.wikicorpus import IGNORED_NAMESPACES, extract_pages, filter_wiki, tokenize
    from gensim.test.utils import datapath

    if max_words < 1:
        raise ValueError(f"max_words must be at least 1, got {max_words}")
    path = path or datapath(WIKI_DUMP)
    sentences = []
    with bz2.open(path, "rb") as f:
        for title, text, _ in extract_pages(f, filter_namespaces=("0",)):
            if any(title.startswith(ns + ":") for ns in IGNORED_NAMESPACES):
                continue
            words = tokenize(filter_wiki(text))
            if len(words) < min_article_words:
                continue
            sentences.extend(words[i:i + max_words] for i in range(0, len(words), max_words))
    return sentences


# --------------------------------------------------------------------------- vocabulary

class _WordIndex:
    """Lookup shared by Vocab and WordVectors: both hold `tokens` (row → word) and `index`
    (word → row), as every vocabulary of the book does."""
    tokens: list[str]
    index: dict[str, int]

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word) -> bool:
        return word in self.index

    def id(self, word: str) -> int:
        """The row of `word`; a KeyError naming the word if it is not in the vocabulary."""
        try:
            return self.index[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the vocabulary ({len(self)} words)") from None


@dataclass
class Vocab(_WordIndex):
    """Words and their corpus counts, most frequent first (ties: first seen first)."""
    tokens: list[str]
    counts: np.ndarray
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if len(self.tokens) != len(self.counts):
            raise ValueError(f"{len(self.tokens)} words but {len(self.counts)} counts")
        self.index = {w: i for i, w in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("the vocabulary holds a word twice")

    def encode(self, words: Sequence[str]) -> list[int]:
        """Ids of the words of one sentence; words outside the vocabulary are dropped, as
        word2vec drops them."""
        if isinstance(words, str):
            raise TypeError(f"encode takes a list of words, not a string: split {words[:30]!r} first")
        return [self.index[w] for w in words if w in self.index]

    def decode(self, ids) -> list[str]:
        """The words of a sequence of ids."""
        return [self.tokens[int(i)] for i in ids]

    def encode_corpus(self, sentences: Iterable[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """All sentences as one array of word ids, and the sentence number of each id.

        Words outside the vocabulary are dropped, as word2vec drops them.
        """
        ids, sentence_ids = [], []
        for number, sentence in enumerate(sentences):
            row = self.encode(sentence)
            ids.extend(row)
            sentence_ids.extend([number] * len(row))
        return np.asarray(ids, dtype=np.int64), np.asarray(sentence_ids, dtype=np.int64)


def build_vocab(sentences: Iterable[Sequence[str]], min_count: int = 5) -> Vocab:
    """Count words; keep those seen at least `min_count` times, most frequent first."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts = Counter()
    for sentence in sentences:
        if isinstance(sentence, str):
            raise TypeError("each sentence must be a list of words, not a string: "
                            f"split {sentence[:30]!r} into words first")
        counts.update(sentence)
    # Counter keeps first-seen order, and sorted() is stable, so ties stay in that order.
    kept = sorted(((w, c) for w, c in counts.items() if c >= min_count), key=lambda wc: -wc[1])
    if not kept:
        raise ValueError(f"no word occurs {min_count} or more times: lower min_count or give more text")
    return Vocab([w for w, _ in kept], np.array([c for _, c in kept], dtype=np.int64))


# --------------------------------------------------------------------------- sampling

def keep_probabilities(counts, sample: float = 1e-3) -> np.ndarray:
    """Probability that each occurrence of a word is kept by word2vec's subsampling.

    With t = sample x (number of words in the corpus) and c a word's count, a word is kept
    with probability (sqrt(c / t) + 1) * t / c, capped at 1: rare words always stay, a word
    making up a fraction f of the text stays about sqrt(sample / f) of the time.
    `sample=0` turns subsampling off.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if np.any(counts <= 0):
        raise ValueError("every count must be positive")
    if sample < 0:
        raise ValueError(f"sample must be >= 0, got {sample}")
    if sample == 0:
        return np.ones_like(counts)
    t = sample * counts.sum()
    return np.minimum(1.0, (np.sqrt(counts / t) + 1.0) * t / counts)


def noise_distribution(counts, power: float = 0.75) -> np.ndarray:
    """The distribution negatives are drawn from: counts ** power, normalised to sum to 1."""
    counts = np.asarray(counts, dtype=np.float64)
    if np.any(counts <= 0):
        raise ValueError("every count must be positive")
    weights = counts ** power
    return weights / weights.sum()


def unigram_table(probs, size: int = 1_000_000) -> np.ndarray:
    """A table of word ids in which word i fills a share probs[i] of the slots.

    Drawing a uniform slot then gives a word with probability probs[i] (to within 1/size):
    word2vec's trick, much faster than sampling from the distribution each time.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if size < len(probs):
        raise ValueError(f"table size {size} is smaller than the vocabulary ({len(probs)})")
    cdf = np.cumsum(probs / probs.sum())
    slots = (np.arange(size) + 0.5) / size
    return np.minimum(np.searchsorted(cdf, slots), len(probs) - 1).astype(np.int64)


def skipgram_pairs(ids, sentence_ids, window: int, rng: np.random.Generator):
    """Every (center, context) pair of skip-gram, vectorised over the whole corpus.

    As in word2vec, each center word draws its own window size b uniformly from
    1..`window` and pairs with the b words on each side that lie in the same sentence.
    Returns two arrays of word ids of equal length, ordered by offset, not shuffled.
    """
    ids = np.asarray(ids)
    sentence_ids = np.asarray(sentence_ids)
    if ids.shape != sentence_ids.shape:
        raise ValueError("ids and sentence_ids must have the same length")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    n = len(ids)
    reach = rng.integers(1, window + 1, size=n)      # each center's window size b
    centers, contexts = [], []
    for d in range(1, window + 1):
        left = np.arange(n - d)                       # positions i with a word at i + d
        same = sentence_ids[left] == sentence_ids[left + d]
        fwd = left[same & (reach[left] >= d)]         # center i sees the word d to its right
        bwd = left[same & (reach[left + d] >= d)]     # center i + d sees the word d to its left
        centers += [ids[fwd], ids[bwd + d]]
        contexts += [ids[fwd + d], ids[bwd]]
    if not centers:
        return np.zeros(0, dtype=ids.dtype), np.zeros(0, dtype=ids.dtype)
    return np.concatenate(centers), np.concatenate(contexts)


# --------------------------------------------------------------------------- model

class SkipGramNS(nn.Module):
    """Two tables of word vectors: `center` (the word vectors we keep) and `context`.

    The score of a (center, context) pair is the dot product of the center word's vector
    with the context word's vector; the loss of one pair with K negatives is
    -log sigma(score of the true pair) - sum over the negatives of log sigma(-score).
    """

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.center = nn.Embedding(vocab_size, dim)
        self.context = nn.Embedding(vocab_size, dim)
        # word2vec's start: small random center vectors, context vectors all zero.
        nn.init.uniform_(self.center.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.context.weight)

    def forward(self, center, context, negatives):
        """Loss of each pair: tensors of shape [B], [B] and [B, K] give shape [B]."""
        v = self.center(center)                                        # [B, D]
        u = self.context(torch.cat([context[:, None], negatives], 1))  # [B, 1+K, D]
        scores = (u * v[:, None, :]).sum(-1)                           # [B, 1+K]
        # A negative that happens to be the true context word is skipped, as in word2vec.
        real = (negatives != context[:, None]).to(scores.dtype)
        return -(F.logsigmoid(scores[:, 0]) + (F.logsigmoid(-scores[:, 1:]) * real).sum(1))


@dataclass
class TrainedSkipGram:
    vocab: Vocab
    model: SkipGramNS
    losses: list[float]             # mean loss of each batch, in order
    pairs_per_epoch: list[int]
    seconds: float

    @property
    def vectors(self) -> np.ndarray:
        """The center-word vectors, one row per vocabulary word (float32, not normalised)."""
        return self.model.center.weight.detach().cpu().numpy().copy()

    def word_vectors(self) -> WordVectors:
        """The center-word vectors as unit-length `WordVectors`, ready for evaluation."""
        return WordVectors(self.vocab.tokens, self.vectors)


def train_skipgram(sentences, vocab: Vocab | None = None, *, dim: int = 50, window: int = 5,
                   negative: int = 5, sample: float = 1e-3, min_count: int = 5, epochs: int = 3,
                   batch_size: int = 8192, lr: float = 0.05, seed: int = 0,
                   device=None, cpu_threads: int | None = None) -> TrainedSkipGram:
    """Train skip-gram with negative sampling with Adam on large mini-batches.

    Each epoch subsamples frequent words afresh, makes every (center, context) pair with a
    random window, shuffles them, draws `negative` noise words per pair from counts ** 0.75,
    and takes Adam steps on the mean loss of `batch_size` pairs; the learning rate falls
    linearly from `lr` towards 0 over the run. Deterministic for a given `seed` and device
    (on the CPU the result does not depend on the number of threads either).

    `cpu_threads`, if given, is the number of CPU threads torch uses during training (the
    previous setting is restored afterwards): 1 makes a fair words/s comparison with
    gensim run with `workers=1`, and avoids threads fighting over a busy machine.
    """
    for name, value in (("epochs", epochs), ("negative", negative), ("batch_size", batch_size), ("dim", dim)):
        check_int(name, value, low=1)
    check_number("lr", lr, low=0, low_open=True)
    if vocab is None:
        vocab = build_vocab(sentences, min_count)
    device = torch.device(device or "cpu")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    ids, sentence_ids = vocab.encode_corpus(sentences)
    if len(ids) == 0 and not isinstance(sentences, Sequence):
        raise ValueError("sentences gave no words to train on: it is an iterator, and build_vocab used it up; "
                         "pass a list of sentences")
    if not np.any(sentence_ids[1:] == sentence_ids[:-1]):
        raise ValueError(f"no sentence has two words of the vocabulary ({len(vocab)} words, {len(ids)} "
                         f"occurrences in the text), so there is no (center, context) pair to learn from: "
                         f"give sentences of several words, more text, or a lower min_count")
    keep = keep_probabilities(vocab.counts, sample)
    table = unigram_table(noise_distribution(vocab.counts))
    model = SkipGramNS(len(vocab), dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    losses, pairs_per_epoch = [], []
    threads_before = torch.get_num_threads()
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    start = time.perf_counter()
    try:
        model.train()
        for epoch in range(epochs):
            kept = rng.random(len(ids)) < keep[ids]
            centers, contexts = skipgram_pairs(ids[kept], sentence_ids[kept], window, rng)
            order = rng.permutation(len(centers))
            centers, contexts = centers[order], contexts[order]
            negatives = table[rng.integers(0, len(table), size=(len(centers), negative))]
            pairs_per_epoch.append(len(centers))
            c_all = torch.from_numpy(centers).to(device)
            o_all = torch.from_numpy(contexts).to(device)
            n_all = torch.from_numpy(negatives).to(device)
            for lo in range(0, len(centers), batch_size):
                progress = (epoch + lo / len(centers)) / epochs      # 0 -> 1 over the run
                for group in optimizer.param_groups:
                    group["lr"] = lr * (1.0 - progress)
                loss = model(c_all[lo:lo + batch_size], o_all[lo:lo + batch_size],
                             n_all[lo:lo + batch_size]).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    finally:
        torch.set_num_threads(threads_before)
    if not losses:
        raise ValueError(f"subsampling (sample={sample}) left no (center, context) pair in any epoch, so "
                         f"nothing was learnt: give more text, or a smaller sample (0 turns it off)")
    model.eval()
    return TrainedSkipGram(vocab, model, losses, pairs_per_epoch, time.perf_counter() - start)


# --------------------------------------------------------------------------- evaluation

class WordVectors(_WordIndex):
    """Words and unit-length vectors: the one form every evaluation below works on.

    Rows must be ordered most frequent word first (our `Vocab` and gensim both do this),
    because `restrict_vocab=N` means "only the first N rows".
    """

    def __init__(self, words: Sequence[str], vectors):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError(f"need one vector row per word: {len(words)} words, "
                             f"array of shape {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            row = int(np.argmin(np.isfinite(vectors).all(axis=1)))
            raise ValueError(f"word {words[row]!r} has a vector with NaN or infinite values: the training "
                             f"that made it diverged (try a lower learning rate)")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError(f"word {words[int(np.argmin(norms))]!r} has an all-zero vector")
        self.tokens = list(words)
        self.index = {w: i for i, w in enumerate(self.tokens)}
        self.vectors = vectors / norms

    @classmethod
    def from_gensim(cls, keyed_vectors) -> WordVectors:
        """gensim's `model.wv` (a KeyedVectors), in gensim's own row order."""
        return cls(keyed_vectors.index_to_key, keyed_vectors.vectors)

    def reordered(self, words: Sequence[str]) -> WordVectors:
        """The same vectors with rows in the order of `words` (e.g. another model's vocabulary)."""
        return WordVectors(words, self.vectors[[self.id(w) for w in words]])

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.id(word)]

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words."""
        return float(self[a] @ self[b])


def _ranked(wv: WordVectors, query: np.ndarray, exclude: Sequence[int], k: int,
            restrict_vocab: int | None):
    n = len(wv) if restrict_vocab is None else min(restrict_vocab, len(wv))
    scores = wv.vectors[:n] @ (query / np.linalg.norm(query))
    scores[[i for i in exclude if i < n]] = -np.inf
    k = min(k, n - len(exclude))
    # Stable sort of the negated scores: equal scores keep the more frequent word first.
    best = np.argsort(-scores, kind="stable")[:k]
    return [(wv.tokens[i], round(float(scores[i]), 6)) for i in best]


def nearest(wv: WordVectors, word: str, k: int = 5, restrict_vocab: int | None = None):
    """The k words with the highest cosine similarity to `word` (itself left out)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    i = wv.id(word)
    return _ranked(wv, wv.vectors[i], [i], k, restrict_vocab)


def analogy(wv: WordVectors, a: str, b: str, c: str, k: int = 5, restrict_vocab: int | None = None):
    """a is to b as c is to ...? The k words closest to b - a + c (3CosAdd), inputs left out.

    `analogy(wv, "man", "king", "woman")` asks for king - man + woman.
    """
    ia, ib, ic = wv.id(a), wv.id(b), wv.id(c)
    query = wv.vectors[ib] - wv.vectors[ia] + wv.vectors[ic]
    return _ranked(wv, query, sorted({ia, ib, ic}), k, restrict_vocab)


def load_wordsim353(path=None) -> list[tuple[str, str, float]]:
    """WordSim-353 as (word, word, mean human score 0-10), words lower-cased."""
    from gensim.test.utils import datapath

    pairs = []
    with open(path or datapath("wordsim353.tsv"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            a, b, score = line.rstrip("\n").split("\t")
            pairs.append((a.lower(), b.lower(), float(score)))
    return pairs


def load_google_analogies(path=None) -> list[tuple[str, str, str, str, str]]:
    """The Google analogy questions as (section, a, b, c, d): a is to b as c is to d."""
    from gensim.test.utils import datapath

    questions, section = [], None
    with open(path or datapath("questions-words.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith(": "):
                section = line[2:].strip()
            elif line.strip():
                if section is None:
                    raise ValueError("analogy file has a question before its first ': section' line")
                a, b, c, d = line.lower().split()
                questions.append((section, a, b, c, d))
    return questions


@dataclass
class WordSimResult:
    spearman: float
    pairs_used: int
    pairs_skipped: int


def wordsim_spearman(wv: WordVectors, pairs, restrict_vocab: int | None = None) -> WordSimResult:
    """Spearman correlation of the cosine of each word pair with the human scores.

    Pairs with a word outside the (first `restrict_vocab` words of the) vocabulary are
    skipped and counted, as gensim's `evaluate_word_pairs` does.
    """
    from scipy.stats import spearmanr

    n = len(wv) if restrict_vocab is None else restrict_vocab
    human, model, skipped = [], [], 0
    for a, b, score in pairs:
        ia, ib = wv.index.get(a, n), wv.index.get(b, n)
        if ia >= n or ib >= n:
            skipped += 1
            continue
        human.append(score)
        model.append(float(wv.vectors[ia] @ wv.vectors[ib]))
    if len(human) < 3:
        raise ValueError(f"only {len(human)} of {len(pairs)} pairs have both words in the vocabulary")
    return WordSimResult(float(spearmanr(human, model).statistic), len(human), skipped)


@dataclass
class AnalogyResult:
    accuracy: float
    correct: int
    questions_used: int
    questions_skipped: int
    by_section: dict[str, tuple[int, int]]   # section -> (correct, used)


def analogy_accuracy(wv: WordVectors, questions, restrict_vocab: int = 30000,
                     batch: int = 1024) -> AnalogyResult:
    """Share of analogy questions a:b :: c:d whose best answer to b - a + c is d.

    Only the first `restrict_vocab` words count: a question using any other word is
    skipped, and answers are searched among those words only, leaving out a, b and c.
    This is the rule of gensim's `evaluate_word_analogies` (and of word2vec's
    compute-accuracy), vectorised: questions are scored `batch` at a time.
    """
    n = min(restrict_vocab, len(wv))
    rows, sections = [], []
    for section, *words in questions:
        ids = [wv.index.get(w, n) for w in words]
        if max(ids) < n:
            rows.append(ids)
            sections.append(section)
    skipped = len(questions) - len(rows)
    if not rows:
        raise ValueError(f"no question has all four words among the first {n} words")
    q = np.array(rows)
    E = wv.vectors[:n]
    predicted = np.empty(len(q), dtype=np.int64)
    for lo in range(0, len(q), batch):
        a, b, c = q[lo:lo + batch, 0], q[lo:lo + batch, 1], q[lo:lo + batch, 2]
        scores = (E[b] - E[a] + E[c]) @ E.T
        for col in (a, b, c):
            scores[np.arange(len(col)), col] = -np.inf
        predicted[lo:lo + batch] = scores.argmax(1)
    right = predicted == q[:, 3]
    by_section = {}
    for section, ok in zip(sections, right):
        good, used = by_section.get(section, (0, 0))
        by_section[section] = (good + int(ok), used + 1)
    return AnalogyResult(float(right.mean()), int(right.sum()), len(q), skipped, by_section)
