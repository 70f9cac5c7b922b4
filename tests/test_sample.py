"""Training on a text file of one's own (--data), and writing from the terminal (encoding_world.sample)."""
import dataclasses
import re

import pytest
import torch

from encoding_world import lm_data
from encoding_world import sample as sample_module
from encoding_world import train as train_module
from encoding_world.data import DataError
from encoding_world.decoding import decode
from encoding_world.training import CheckpointError

WORDS = "the cat sat on a mat and saw one red bird fly over green hills while rain fell softly".split()


def write_corpus(path, documents=60, layout="lines"):
    """A small English text: `documents` lines (or paragraphs of two lines, blank-line separated)."""
    docs = []
    for i in range(documents):
        line = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(8 + i % 5)).capitalize() + "."
        docs.append(line if layout == "lines" else line + "\n" + line[::-1])
    path.write_text(("\n" if layout == "lines" else "\n\n").join(docs) + "\n", encoding="utf-8")
    return path


def text_config(path, layout="lines", **changes):
    return dataclasses.replace(train_module.CONFIGS["tiny"], data=str(path), documents=layout, max_steps=30,
                               eval_every=10, checkpoint_every=10, **changes)


def test_train_on_own_text_then_sample(tmp_path):
    corpus = write_corpus(tmp_path / "mine.txt")
    config = text_config(corpus)
    model, vocab, history = train_module.run(config, tmp_path / "run", device="cpu", log=lambda _: None)
    assert history["val_loss"][-1] < history["val_loss"][0]
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["extra"]
    assert saved["vocab"] == vocab.tokens and saved["vocab"][0] == "\n" and "z" not in saved["vocab"]
    assert set("the cat.") <= set(saved["vocab"]) and len(saved["data_sha256"]) == 64

    loaded, loaded_vocab = sample_module.load_model(tmp_path / "run", "cpu")     # the folder, or the file
    assert loaded_vocab.tokens == vocab.tokens
    pieces = []
    texts = sample_module.sample(loaded, loaded_vocab, "The ", num_samples=2, max_new_tokens=40, seed=3,
                                 write=pieces.append)
    assert all(t.startswith("The ") for t in texts) and len(pieces) > 2       # streamed, not in one piece
    assert "".join(pieces) == "\n".join(texts)
    assert texts == sample_module.sample(loaded, loaded_vocab, "The ", 2, 40, seed=3)   # the seed repeats them

    # The file changed since the run began: resuming from it is refused, naming why.
    corpus.write_text(corpus.read_text() + "One more line at the end.\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="another version of --data"):
        train_module.run(dataclasses.replace(config, max_steps=40), tmp_path / "run", extend=True, device="cpu",
                         log=lambda _: None)


def test_blank_line_documents_keep_their_newlines(tmp_path):
    config = text_config(write_corpus(tmp_path / "paragraphs.txt", 40, "blank-lines"), "blank-lines")
    data = train_module.load_data(config)
    assert data.vocab.tokens[0] == train_module.DOCUMENT_END and "\n" in data.vocab
    assert (data.train == 0).sum() == 38 and (data.val == 0).sum() == 2     # every 20th document held out
    assert "\n" in data.vocab.decode(data.train[:200])


def test_bad_text_input_gives_clear_errors(tmp_path):
    def error_of(path, layout="lines", **changes):
        with pytest.raises((ValueError, OSError)) as info:
            train_module.load_data(text_config(path, layout, **changes))
        return str(info.value)

    assert "no such file" in error_of(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    assert "is empty" in error_of(tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    assert "only blank lines" in error_of(tmp_path / "blank.txt")
    assert "is a folder" in error_of(tmp_path)
    (tmp_path / "gbk.txt").write_bytes("春眠不觉晓\n".encode() + "处处闻啼鸟\n".encode("gbk"))
    message = error_of(tmp_path / "gbk.txt")
    assert "not UTF-8" in message and "byte offset 16" in message and "line 2" in message
    write_corpus(tmp_path / "few.txt", documents=10)
    assert "at least 20 are needed" in error_of(tmp_path / "few.txt")
    write_corpus(tmp_path / "short.txt", documents=20)
    assert "too small for block_size 256" in error_of(tmp_path / "short.txt", block_size=256)
    found = re.search(r"hold (\d+) distinct characters, more than vocab_size 10 allows .*--vocab-size (\d+) \(or more\)",
                      error_of(tmp_path / "short.txt", vocab_size=10))
    assert found and int(found.group(2)) == int(found.group(1)) + 2
    with pytest.raises(ValueError, match="--data needs --documents blank-lines or lines"):
        train_module.check_config(text_config(tmp_path / "short.txt", None))
    with pytest.raises(DataError):
        train_module.load_data(text_config(tmp_path / "gbk.txt"))


def test_sample_command_names_unknown_characters(capsys):
    assert sample_module.main(["--prompt", "春风龘", "--num-samples", "2", "--max-new-tokens", "30", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert "'龘' (U+9F98)" in err and "'□'" in err
    lines = out.rstrip("\n").split("\n")
    assert len(lines) == 2 and all(line.startswith("春风□") for line in lines)
    assert sample_module.main(["--top-p", "1.5"]) == 2
    assert "top_p must be a number in (0, 1]" in capsys.readouterr().err


def test_sampling_is_the_generation_loop():
    # The command's text is decode()'s, token for token; an empty prompt starts a new poem.
    torch.manual_seed(0)
    model = train_module.GPT(train_module.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, d_model=16))
    vocab = lm_data.CharVocab("abcdefghijklmnopqr")
    texts = sample_module.sample(model.eval(), vocab, "", num_samples=1, max_new_tokens=12, temperature=0)
    seen = []
    ids = decode(model, torch.tensor([[0]]), 12, 0, stop_id=0, on_token=seen.append)
    assert texts == [vocab.decode(ids[0, 1:]).split("\n")[0]]
    assert torch.equal(torch.cat(seen, dim=1), ids[:, 1:])
    assert torch.equal(decode(model, torch.tensor([[0]]), 12, 0, stop_id=0), ids)    # the callback changes nothing
