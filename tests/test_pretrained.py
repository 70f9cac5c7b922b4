"""The book's pretrained mini-GPT: its file, its card, and the loss the card claims."""
import json

import pytest
import torch
from safetensors import safe_open

from encoding_world import lm_data, train
from encoding_world.data import data_path
from encoding_world.gpt import GPT
from encoding_world.ngram import best_ngram_val_loss
from encoding_world.pretrained import (CARD_TEXT, WEIGHTS, export, full_validation_loss, load_pretrained,
                                       model_card, sha256)
from encoding_world.training import CheckpointError

BEST_NGRAM = 4.9973  # lesson 10's Kneser-Ney 5-gram, nats per character on the same stream


@pytest.fixture(scope="module")
def pretrained():
    return load_pretrained()


@pytest.fixture(scope="module")
def data():
    return train.load_data(train.CONFIGS["cpu-full"])


def test_file_is_small_and_matches_its_card():
    path = data_path(WEIGHTS)
    assert path.stat().st_size <= 20 * 1024 * 1024
    card = model_card()
    assert sha256(path) == card["weights_sha256"]
    assert card["data"]["sha256"] == sha256(data_path("tang_poems.tsv"))
    # The card's configuration is the training command's own, so the model can be remade
    # (settings added since the card was written, such as arch, have their defaults).
    defaults = {f.name: f.default for f in train.dataclasses.fields(train.TrainConfig)}
    assert defaults | card["train_config"] == train.dataclasses.asdict(train.CONFIGS["cpu-full"])
    text = data_path(CARD_TEXT).read_text(encoding="utf-8")
    for figure in (f"{card['validation_loss']:.4f}", card["weights_sha256"], f"{card['steps']:,}"):
        assert figure in text


def test_weights_file_holds_only_tensors_and_text():
    with safe_open(data_path(WEIGHTS), framework="pt") as f:
        metadata = f.metadata()
        assert all(isinstance(f.get_tensor(k), torch.Tensor) for k in f.keys())
    assert {"model_config", "vocab"} <= set(metadata)
    assert len(json.loads(metadata["vocab"])) == model_card()["model_config"]["vocab_size"]


def test_recomputed_validation_loss_matches_card(pretrained, data):
    model, vocab = pretrained
    assert vocab.tokens == data.vocab.tokens, "the pretrained vocabulary must be the one lessons 10-15 build"
    assert model.lm_head.weight is model.token_embedding.weight
    loss = full_validation_loss(model, data.val, model.config.block_size)
    card = model_card()
    assert abs(loss - card["validation_loss"]) <= 0.01
    # Issue 4's bar: at least 0.5 nats per character better than the best n-gram model.
    assert loss <= BEST_NGRAM - 0.5


def test_best_ngram_constant_is_lesson_9s(data):
    assert best_ngram_val_loss(data) == pytest.approx(BEST_NGRAM, abs=5e-5)


def test_generation_is_reproducible_and_in_vocabulary(pretrained):
    model, vocab = pretrained
    prompt = torch.tensor([vocab.encode("春风")])
    runs = [model.generate(prompt, 30, temperature=0.8, top_k=50,
                           generator=torch.Generator().manual_seed(1))[0].tolist() for _ in range(2)]
    assert runs[0] == runs[1]
    assert all(0 <= i < len(vocab) for i in runs[0])


def test_export_refuses_what_is_not_a_training_checkpoint(tmp_path):
    bogus = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    with pytest.raises(CheckpointError, match="encoding_world.train"):
        export(bogus, tmp_path / "out", training_seconds=1.0)
    with pytest.raises(CheckpointError, match="encoding_world.train"):
        export(tmp_path / "missing.pt", tmp_path / "out", training_seconds=1.0)


def test_missing_weights_name_the_command(monkeypatch, tmp_path):
    import encoding_world.data as data_module
    monkeypatch.setattr(data_module, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="encoding_world.pretrained"):
        load_pretrained()
