"""Tests of encoding_world.clip: the bilingual tokenizer, the vocabulary, both encoders and
the symmetric contrastive (InfoNCE) loss, checked against sentence-transformers."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoding_world.clip import ImageEncoder, TextEncoder, Vocab, contrastive_loss, tokenize

# ------------------------------------------------------------------------- tokenizer

@pytest.mark.parametrize("text, tokens", [
    ("a handwritten seven", ["a", "handwritten", "seven"]),
    ("The Digit 7.", ["the", "digit", "7"]),
    ("手写的数字七", ["手", "写", "的", "数", "字", "七"]),
    ("数字 7 的图片", ["数", "字", "7", "的", "图", "片"]),
    ("a handwritten 七!", ["a", "handwritten", "七"]),
    ("10", ["1", "0"]),
    ("  ,。 ", []),
])
def test_tokenize_words_digits_and_characters(text, tokens):
    assert tokenize(text) == tokens


def test_tokenize_refuses_a_list():
    with pytest.raises(TypeError, match="string"):
        tokenize(["a", "b"])


# ------------------------------------------------------------------------ vocabulary

def test_vocab_numbers_tokens_in_order_of_first_appearance():
    vocab = Vocab(["the digit 7", "a handwritten seven", "数字 7"])
    assert vocab.tokens == ["the", "digit", "7", "a", "handwritten", "seven", "数", "字"]
    assert vocab.index == {t: i for i, t in enumerate(vocab.tokens)}
    assert len(vocab) == 8 and "7" in vocab and "八" not in vocab


def test_encode_gives_embeddingbag_input_and_skips_unknown_tokens():
    vocab = Vocab(["the digit 7", "a handwritten seven"])
    ids, offsets = vocab.encode_batch(["the digit 7", "a photo of a seven"])
    # "photo" and "of" are unknown: the second caption keeps a, a, seven.
    assert ids.tolist() == [0, 1, 2, 3, 3, 5]
    assert offsets.tolist() == [0, 3]
    assert ids.dtype == offsets.dtype == torch.long
    assert vocab.encode("a photo of a seven") == [3, 3, 5] and vocab.decode([5, 3]) == ["seven", "a"]


def test_encode_errors_are_clear():
    vocab = Vocab(["the digit 7"])
    with pytest.raises(ValueError, match="no token in the vocabulary"):
        vocab.encode_batch(["a photo"])
    with pytest.raises(TypeError, match="not one string"):
        vocab.encode_batch("the digit 7")
    with pytest.raises(ValueError, match="no captions"):
        vocab.encode_batch([])
    with pytest.raises(ValueError, match="empty"):
        Vocab(["...", "。"])


# -------------------------------------------------------------------------- encoders

def test_image_encoder_gives_unit_vectors_for_both_image_layouts():
    torch.manual_seed(0)
    encoder = ImageEncoder(hidden=16, dim=5)
    images = torch.rand(7, 8, 8)
    vectors = encoder(images)
    assert vectors.shape == (7, 5)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(encoder(images.unsqueeze(1)), vectors)      # [B, 1, 8, 8]
    by_hand = encoder.proj(torch.relu(encoder.hidden(images.reshape(7, 64))))
    torch.testing.assert_close(vectors, by_hand / by_hand.norm(dim=1, keepdim=True))


def test_image_encoder_rejects_the_wrong_number_of_pixels():
    with pytest.raises(ValueError, match="49 pixels"):
        ImageEncoder()(torch.rand(2, 7, 7))


def test_text_encoder_is_a_mean_of_word_vectors_then_a_projection():
    torch.manual_seed(0)
    vocab = Vocab(["a handwritten seven", "the digit 7", "手写的数字七"])
    encoder = TextEncoder(len(vocab), width=6, dim=4)
    captions = ["a handwritten seven", "the digit 7", "手写的数字七", "a 七"]
    vectors = encoder(*vocab.encode_batch(captions))
    for caption, vector in zip(captions, vectors):
        rows = torch.tensor([vocab.index[t] for t in tokenize(caption)])
        pooled = encoder.embedding.weight[rows].mean(dim=0)
        want = F.normalize(encoder.proj(pooled), dim=0)
        torch.testing.assert_close(vector, want)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(4))


def test_text_encoder_ignores_word_order():
    vocab = Vocab(["a seven not a one"])
    encoder = TextEncoder(len(vocab))
    a, b = encoder(*vocab.encode_batch(["a seven, not a one", "a one, not a seven"]))
    torch.testing.assert_close(a, b)


def test_text_encoder_rejects_ids_outside_the_vocabulary():
    encoder = TextEncoder(5)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        encoder(torch.tensor([1, 5]), torch.tensor([0]))


# ------------------------------------------------------------------------------ loss

def loss_by_formula(images, texts, temperature):
    """The loss written with explicit sums, in float64."""
    logits = (images.double() @ texts.double().T / temperature).numpy()
    n = len(logits)
    rows = [-(logits[i, i] - math.log(np.exp(logits[i]).sum())) for i in range(n)]
    cols = [-(logits[i, i] - math.log(np.exp(logits[:, i]).sum())) for i in range(n)]
    return (sum(rows) / n + sum(cols) / n) / 2


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("batch, dim, temperature", [(64, 32, 0.1), (5, 3, 1.0), (1, 4, 0.07)])
def test_loss_equals_the_formula(batch, dim, temperature):
    images, texts = unit(batch, dim, seed=1), unit(batch, dim, seed=2)
    loss = contrastive_loss(images, texts, temperature)
    assert loss.item() == pytest.approx(loss_by_formula(images, texts, temperature), abs=1e-5)


def test_loss_equals_sentence_transformers_symmetric_ranking_loss():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    images, texts = unit(64, 32, seed=3), unit(64, 32, seed=4)
    for temperature in (0.05, 0.1, 1.0):
        library = MultipleNegativesRankingLoss(model=None, scale=1 / temperature,
                                               directions=("query_to_doc", "doc_to_query"),
                                               partition_mode="per_direction")
        want = library.compute_loss_from_embeddings([images, texts], labels=None)
        torch.testing.assert_close(contrastive_loss(images, texts, temperature), want, atol=1e-5, rtol=0)


def test_loss_is_symmetric_and_has_the_right_extremes():
    images, texts = unit(16, 8, seed=5), unit(16, 8, seed=6)
    torch.testing.assert_close(contrastive_loss(images, texts, 0.1), contrastive_loss(texts, images, 0.1))
    same = torch.ones(16, 8) / math.sqrt(8)                 # every pair looks alike: ln B
    assert contrastive_loss(same, same, 0.1).item() == pytest.approx(math.log(16), abs=1e-5)
    basis = torch.eye(8)                                     # perfect, orthogonal pairs: near 0
    assert contrastive_loss(basis, basis, 0.01).item() < 1e-6


def test_loss_has_gradients_for_both_encoders():
    images = unit(8, 4, seed=7).requires_grad_()
    texts = unit(8, 4, seed=8).requires_grad_()
    contrastive_loss(images, texts, 0.1).backward()
    assert images.grad.abs().sum() > 0 and texts.grad.abs().sum() > 0


def test_loss_errors_are_clear():
    with pytest.raises(ValueError, match="same shape"):
        contrastive_loss(unit(4, 3), unit(5, 3), 0.1)
    with pytest.raises(ValueError, match="same shape"):
        contrastive_loss(unit(4), unit(4), 0.1)
    with pytest.raises(ValueError, match="positive"):
        contrastive_loss(unit(4, 3), unit(4, 3), 0.0)


# ------------------------------------------------------------------ a tiny training run

def test_a_short_training_run_aligns_digits_with_their_names():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images[:600] / 16, dtype=torch.float32)
    labels = digits.target[:600]
    names = "zero one two three four five six seven eight nine".split()
    vocab = Vocab([f"the digit {n}" for n in names])
    torch.manual_seed(0)
    image_encoder, text_encoder = ImageEncoder(), TextEncoder(len(vocab))
    optimizer = torch.optim.AdamW([*image_encoder.parameters(), *text_encoder.parameters()], lr=3e-3)
    for _ in range(30):
        for start in range(0, 500, 50):
            rows = slice(start, start + 50)
            captions = [f"the digit {names[d]}" for d in labels[rows]]
            loss = contrastive_loss(image_encoder(images[rows]), text_encoder(*vocab.encode_batch(captions)), 0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        prompts = text_encoder(*vocab.encode_batch([f"the digit {n}" for n in names]))
        predicted = (image_encoder(images[500:]) @ prompts.T).argmax(dim=1).numpy()
    assert (predicted == labels[500:]).mean() > 0.7          # chance is 0.1
