"""Bad inputs and faults: every one ends in a clear error (what is wrong, what to do), a
correct result, or nothing lost (issue 11). Never in a raw traceback or a silent wrong answer.

Runs train on the `tiny` config for a few dozen steps, in this process where it can (a
subprocess pays for importing torch again), on one CPU thread: CI shares 2 cores with
other test processes, and two threads fighting over them make each step tens of times
slower. The results do not depend on it; the Ctrl-C test gives its subprocess one thread
too, so that both runs it compares compute alike.
"""
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import encoding_world.data as data_module
from encoding_world import attention, checks, decoding, lm_data, lora, pretrained, train, word2vec
from encoding_world.data import DataError
from encoding_world.gpt import GPT, GPTConfig
from encoding_world.runtime import get_device
from encoding_world.training import CheckpointError, load_checkpoint, read_checkpoint

TINY = ["--config", "tiny", "--no-progress"]
NEVER = "weights_only=False"        # advice that must never be given for a file that is merely damaged


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(main, argv, capsys):
    """(exit code, stdout, stderr) of a command's main() run in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:        # argparse's own usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def run30(tmp_path_factory):
    """A finished tiny run of 30 steps (checkpoint at step 30); copy it before changing it."""
    folder = tmp_path_factory.mktemp("run30")
    assert train.main([*TINY, "--out", str(folder), "--max-steps", "30"]) == 0
    return folder


def copy_run(run30, tmp_path) -> Path:
    return Path(shutil.copytree(run30, tmp_path / "run"))


def flip_a_tensor_byte(path: Path) -> None:
    """Change one byte in the middle of the largest tensor stored in a torch.save zip file."""
    with zipfile.ZipFile(path) as archive:
        entry = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[entry.header_offset + 26:entry.header_offset + 30])
    raw[entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


# ================================================================= data loss (must never happen)

def test_training_again_on_a_run_folder_refuses_and_keeps_its_checkpoint(run30, tmp_path, capsys):
    folder = copy_run(run30, tmp_path)
    before = (folder / "checkpoint.pt").read_bytes()
    code, _, err = run(train.main, [*TINY, "--out", folder, "--max-steps", "5"], capsys)
    assert code == 2
    assert "already holds a run (checkpoint.pt at step 30)" in err
    assert f"--out {folder} --max-steps 5 --resume" in err and "--overwrite" in err and "another --out" in err
    assert (folder / "checkpoint.pt").read_bytes() == before
    with pytest.raises(train.RunExistsError, match="resume=True.*overwrite=True"):
        train.run(dataclasses.replace(train.CONFIGS["tiny"], max_steps=5), folder, device="cpu")
    assert (folder / "checkpoint.pt").read_bytes() == before

    # Starting over is possible, but only when asked for.
    code, _, _ = run(train.main, [*TINY, "--out", folder, "--max-steps", "5", "--overwrite"], capsys)
    assert code == 0 and read_checkpoint(folder / "checkpoint.pt")["step"] == 5


def test_exporting_never_writes_over_the_shipped_model(run30, tmp_path, capsys, monkeypatch):
    shipped = {name: digest(data_module.DATA_DIR / name)
               for name in (pretrained.WEIGHTS, pretrained.CARD, pretrained.CARD_TEXT)}
    folder = copy_run(run30, tmp_path)
    checkpoint = folder / "checkpoint.pt"

    # Without --out the model goes beside its checkpoint.
    code, out, err = run(pretrained.main, [checkpoint, "--training-seconds", "1"], capsys)
    assert code == 0, err
    assert f"wrote {folder / pretrained.WEIGHTS}" in out
    card = json.loads((folder / pretrained.CARD).read_text(encoding="utf-8"))
    assert card["steps"] == 30 and card["weights_sha256"] == data_module.sha256(folder / pretrained.WEIGHTS)

    # Over an exported model (the book's own, or the one just written) only with --overwrite,
    # and the refusal comes before any time is spent on evaluation.
    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluation started before the output folder was checked")

    monkeypatch.setattr(pretrained, "full_validation_loss", no_evaluation)
    monkeypatch.setattr(pretrained, "load_data", no_evaluation)
    code, _, err = run(pretrained.main, [checkpoint, "--out", data_module.DATA_DIR, "--training-seconds", "1"], capsys)
    assert code == 2 and "the book's own pretrained model" in err and "--overwrite" in err
    code, _, err = run(pretrained.main, [checkpoint, "--training-seconds", "1"], capsys)
    assert code == 2 and f"{folder} already holds {pretrained.WEIGHTS}" in err
    assert shipped == {name: digest(data_module.DATA_DIR / name) for name in shipped}


# =================================================================== corruption is detected

def test_a_flipped_byte_in_a_checkpoint_is_detected(run30, tmp_path, capsys):
    folder = copy_run(run30, tmp_path)
    checkpoint = folder / "checkpoint.pt"
    flip_a_tensor_byte(checkpoint)
    model = GPT(train.CONFIGS["tiny"].model_config())
    with pytest.raises(CheckpointError, match=r"fails its CRC-32 check.*damaged on disk or in a copy: copy it again"):
        load_checkpoint(checkpoint, model)
    code, _, err = run(train.main, [*TINY, "--out", folder, "--max-steps", "30", "--resume"], capsys)
    assert code == 2 and "CRC-32" in err and NEVER not in err


def test_a_damaged_pretrained_model_is_detected(tmp_path, monkeypatch):
    for name in (pretrained.WEIGHTS, pretrained.CARD):
        shutil.copy(data_module.DATA_DIR / name, tmp_path / name)
    monkeypatch.setattr(data_module, "DATA_DIR", tmp_path)
    weights = tmp_path / pretrained.WEIGHTS
    good = weights.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x40                      # inside a tensor: safetensors alone would not notice
    weights.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"minigpt_tang.safetensors is not the model its card describes.*"
                                              r"git checkout -- data/minigpt_tang.safetensors"):
        pretrained.load_pretrained()

    # A model with NaN whose card was rewritten to match (a diverged run, exported) is refused too.
    weights.write_bytes(good)
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(weights))
    tensors["blocks.0.ffn.up.weight"][0, 0] = float("nan")
    save_file(tensors, str(weights), metadata=metadata)
    card = json.loads((tmp_path / pretrained.CARD).read_text(encoding="utf-8"))
    card["weights_sha256"] = data_module.sha256(weights)
    (tmp_path / pretrained.CARD).write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"blocks.0.ffn.up.weight holds 1 NaN value.*git checkout"):
        pretrained.load_pretrained()


# ======================================================================= Ctrl-C while training

def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path, capsys):
    folder = tmp_path / "run"
    command = [sys.executable, "-m", "encoding_world.train", *TINY, "--out", str(folder), "--log-every", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in process.stdout:
        if line.startswith("step 30 "):
            process.send_signal(signal.SIGINT)
            break
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err               # 128 + SIGINT, as a shell reports it
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    saved = re.search(r"interrupted \(Ctrl-C\); the last checkpoint, at step (\d+), is in (\S+): continue with", err)
    assert saved and saved.group(2) == str(folder / "checkpoint.pt"), err
    assert f"\n  python -m encoding_world.train --config tiny --out {folder} --resume\n" in err
    step = int(saved.group(1))
    assert step % 25 == 0 and 25 <= step < 200        # a checkpoint step: 25 unless this machine lagged
    assert read_checkpoint(folder / "checkpoint.pt")["step"] == step       # intact and loadable
    assert not list(folder.glob(".*.tmp"))

    code, out, err = run(train.main, [*TINY, "--out", folder, "--resume"], capsys)
    assert code == 0 and f"at step {step}" in out
    history = read_checkpoint(folder / "checkpoint.pt")["extra"]["history"]
    assert history["step"] == [50, 100, 150, 200] and len(history["val_loss"]) == 4


def test_a_disk_that_fills_up_during_training_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    real_save, calls = torch.save, []

    def save_until_the_disk_is_full(obj, f):
        calls.append(1)
        if len(calls) > 1:
            f.write(b"PK\x03\x04 the start of a checkpoint")
            raise OSError(28, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    code, _, err = run(train.main, [*TINY, "--out", folder, "--max-steps", "60"], capsys)
    assert code == 2 and "No space left on device" in err
    assert "the last checkpoint, at step 25" in err and "--resume" in err
    monkeypatch.undo()
    assert read_checkpoint(folder / "checkpoint.pt")["step"] == 25
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]


def test_leftover_temporary_files_are_removed_when_the_run_starts_again(run30, tmp_path, capsys):
    folder = copy_run(run30, tmp_path)
    leftovers = [folder / f".checkpoint.pt.{i:032x}.tmp" for i in range(3)]
    for path in leftovers:
        path.write_bytes(b"PK\x03\x04 half a checkpoint")
    unrelated = folder / ".checkpoint.pt.notes.tmp"
    unrelated.write_text("not ours")
    code, out, _ = run(train.main, [*TINY, "--out", folder, "--max-steps", "30", "--resume"], capsys)
    assert code == 0 and "removed 3 temporary file(s)" in out
    assert not any(p.exists() for p in leftovers) and unrelated.exists()


# ================================================================================ --extend

def test_a_run_is_extended_only_on_purpose(run30, tmp_path, capsys):
    folder = copy_run(run30, tmp_path)
    code, _, err = run(train.main, [*TINY, "--out", folder, "--max-steps", "40", "--resume"], capsys)
    assert code == 2 and "max_steps is 30 in the checkpoint and 40 now" in err and "--extend" in err
    code, _, err = run(train.main, [*TINY, "--out", folder, "--max-steps", "20", "--extend"], capsys)
    assert code == 2 and "only makes a run longer" in err

    code, out, _ = run(train.main, [*TINY, "--out", folder, "--max-steps", "40", "--extend"], capsys)
    assert code == 0 and "extended to 40 steps" in out
    saved = read_checkpoint(folder / "checkpoint.pt")
    assert saved["step"] == 40 and saved["extra"]["schedule_max_steps"] == 30
    tiny = train.CONFIGS["tiny"]
    assert [g["lr"] for g in saved["optimizer"]["param_groups"]] == [tiny.min_learning_rate] * 2
    assert saved["extra"]["history"]["step"][-1] == 40


# ============================================================ bad input: one-line clear errors

def tiny_gpt(vocab_size=10):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=8, n_layer=1, n_head=2, d_model=8))


def nan_gpt():
    model = tiny_gpt()
    with torch.no_grad():
        model.blocks[0].ffn.up.weight.fill_(float("nan"))
    return model


def adapter(d_model=8, poison=False):
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, d_model=d_model))
    lora.add_lora(model, ("q_proj",), r=2, alpha=4)
    found = lora.get_adapter(model)
    if poison:
        next(iter(found.tensors.values()))[0, 0] = float("nan")
    return found


VOCAB = lm_data.CharVocab("春风")
PROMPT = torch.tensor([[1, 2]])
TINY_CONFIG = dataclasses.replace(train.CONFIGS["tiny"], max_steps=2)
ABSENT = next((d for d in ("cuda", "mps") if not {"cuda": torch.cuda.is_available,
                                                   "mps": torch.backends.mps.is_available}[d]()), None)

# (what, call, error type, regular expressions the message must match: what is wrong and what to do)
BAD_CALLS = [
    # decoding
    ("NaN logits, sampled", lambda: decoding.sample_next(torch.tensor([[0.0, float("nan"), 1.0]])),
     ValueError, [r"logits holds 1 NaN value\(s\) \(the first at index \[0, 1\]\)", "check its weights"]),
    ("NaN logits, greedy", lambda: decoding.sample_next(torch.tensor([[0.0, float("nan")]]), temperature=0),
     ValueError, ["logits holds 1 NaN", "check its weights"]),
    ("+inf logit", lambda: decoding.sample_next(torch.tensor([[0.0, float("inf")]])),
     ValueError, ["infinite", "overflow"]),
    ("every logit -inf", lambda: decoding.sample_next(torch.full((1, 3), float("-inf"))),
     ValueError, [r"row \[0\] are all -inf", "none can be chosen"]),
    ("a NaN model decodes greedily", lambda: decoding.decode(nan_gpt(), PROMPT, 3, temperature=0),
     ValueError, ["logits holds", "check its weights"]),
    ("a NaN model generates greedily", lambda: nan_gpt().generate(PROMPT, 3, temperature=0),
     ValueError, ["logits holds", "check its weights"]),
    ("top_p 0", lambda: decoding.decode(tiny_gpt(), PROMPT, 3, top_p=0.0),
     ValueError, [r"top_p must be a number in \(0, 1\], got 0.0", "temperature=0"]),
    ("top_p 1.5", lambda: decoding.decode(tiny_gpt(), PROMPT, 3, top_p=1.5), ValueError, [r"top_p .*\(0, 1\].*1.5"]),
    ("top_p NaN", lambda: decoding.sample_next(torch.zeros(1, 3), top_p=float("nan")), ValueError, [r"top_p .*nan"]),
    ("p of top_p_filter NaN", lambda: decoding.top_p_filter(torch.zeros(1, 3), float("nan")),
     ValueError, [r"p must be a finite number in \[0, 1\], got nan"]),
    ("temperature NaN", lambda: decoding.decode(tiny_gpt(), PROMPT, 3, temperature=float("nan")),
     ValueError, [r"temperature must be a finite number >= 0, got nan"]),
    ("temperature NaN to generate", lambda: tiny_gpt().generate(PROMPT, 3, temperature=float("nan")),
     ValueError, [r"temperature .*>= 0, got nan"]),
    ("negative max_new_tokens", lambda: decoding.decode(tiny_gpt(), PROMPT, -1),
     ValueError, [r"max_new_tokens must be an integer >= 0, got -1"]),
    ("negative max_new_tokens to generate", lambda: tiny_gpt().generate(PROMPT, -2),
     ValueError, [r"max_new_tokens must be an integer >= 0, got -2"]),
    ("empty prompt", lambda: decoding.decode(tiny_gpt(), torch.zeros(1, 0, dtype=torch.long), 3),
     ValueError, [r"holds no token \(shape \[batch, 0\]\)", "at least one"]),
    ("empty prompt to generate", lambda: tiny_gpt().generate(torch.zeros(1, 0, dtype=torch.long), 3),
     ValueError, ["holds no token", "at least one"]),
    ("1-D prompt", lambda: decoding.decode(tiny_gpt(), torch.tensor([1, 2]), 3),
     ValueError, [r"token_ids must be \[batch, len\] token ids, got a int64 tensor of shape \[2\]"]),
    ("prompt id outside the vocabulary", lambda: decoding.decode(tiny_gpt(), torch.tensor([[10]]), 3),
     ValueError, [r"token_ids holds the id 10, outside the vocabulary 0..9"]),
    ("float prompt", lambda: decoding.decode(tiny_gpt(), torch.tensor([[1.0]]), 3),
     TypeError, [r"integer token ids \(torch.long\), got a float32 tensor"]),
    ("stop_id outside the vocabulary", lambda: decoding.decode(tiny_gpt(), PROMPT, 3, stop_id=10),
     ValueError, [r"stop_id must be an integer in \[0, 9\], got 10"]),
    ("negative id to CharVocab.decode", lambda: VOCAB.decode([2, -1]), ValueError, [r"token id -1 out of range 0..3"]),
    ("float id to CharVocab.decode", lambda: VOCAB.decode([1.5]), TypeError, ["integer token ids, got 1.5"]),
    ("2-D tensor to CharVocab.decode", lambda: VOCAB.decode(torch.tensor([[2, 3]])),
     ValueError, [r"ids must be \[len\] token ids, got a int64 tensor of shape \[1, 2\]"]),
    ("negative prompt_length", lambda: decoding.completions(torch.tensor([[1, 2]]), -1),
     ValueError, [r"prompt_length must be an integer in \[0, 2\], got -1"]),
    # the GPT
    ("GPT: id = vocab_size", lambda: tiny_gpt()(torch.tensor([[3, 10]])), ValueError, ["id 10, outside the vocabulary 0..9"]),
    ("GPT: negative id", lambda: tiny_gpt()(torch.tensor([[-1]])), ValueError, ["id -1, outside the vocabulary 0..9"]),
    ("GPT: float ids", lambda: tiny_gpt()(torch.tensor([[1.0]])), TypeError, ["integer token ids"]),
    ("GPT: a list", lambda: tiny_gpt()([[1, 2]]), TypeError, [r"token_ids must be a tensor of token ids \[batch, len\]"]),
    ("GPT: targets of another shape", lambda: tiny_gpt()(PROMPT, torch.tensor([[1]])),
     ValueError, [r"targets must have the shape of token_ids \[1, 2\], got \[1, 1\]"]),
    ("GPT: target outside the vocabulary", lambda: tiny_gpt()(PROMPT, torch.tensor([[1, 12]])),
     ValueError, ["targets holds the id 12, outside the vocabulary"]),
    # attention
    ("attention: 1-D q", lambda: attention.scaled_dot_product_attention(torch.randn(4), torch.randn(3, 4), torch.randn(3, 4)),
     ValueError, [r"q must have at least 2 dimensions, got a float32 tensor of shape \[4\]"]),
    ("attention: batches that do not broadcast",
     lambda: attention.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(3, 3, 4), torch.randn(3, 3, 4)),
     ValueError, [r"q \[2, 3, 4\], k \[3, 3, 4\] and v \[3, 3, 4\] do not broadcast"]),
    ("attention: integer k", lambda: attention.scaled_dot_product_attention(torch.randn(3, 4), torch.ones(3, 4, dtype=torch.long), torch.randn(3, 4)),
     TypeError, ["floating-point tensors of one dtype, got q torch.float32, k torch.int64"]),
    ("attention: a list", lambda: attention.scaled_dot_product_attention([[1.0]], [[1.0]], [[1.0]]),
     TypeError, ["q must be a torch.Tensor, got"]),
    ("positions for a negative length", lambda: attention.sinusoidal_positional_encoding(-1, 4),
     ValueError, ["block_size must be an integer >= 1, got -1"]),
    ("multi-head attention: context of another width", lambda: attention.MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), context=torch.randn(2, 5, 6)),
     ValueError, [r"context must be \[batch, key_len, 8\] with the batch of x \(2\), got a float32 tensor of shape \[2, 5, 6\]"]),
    ("multi-head attention: context of another batch", lambda: attention.MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), context=torch.randn(3, 5, 8)),
     ValueError, [r"context must be .* with the batch of x \(2\), got .*\[3, 5, 8\]"]),
    # LoRA and adapters
    ("LoRA: NaN alpha", lambda: lora.add_lora(tiny_gpt(), ("q_proj",), alpha=float("nan")),
     ValueError, ["alpha must be a finite number, got nan"]),
    ("LoRA: infinite alpha", lambda: lora.LoRALinear(nn.Linear(4, 4), alpha=float("inf")), ValueError, ["alpha must be a finite number"]),
    ("LoRA: dropout 1.5", lambda: lora.add_lora(tiny_gpt(), ("q_proj",), dropout=1.5),
     ValueError, [r"dropout must be a finite number in \[0, 1\), got 1.5"]),
    ("an adapter with NaN", lambda: lora.load_lora(tiny_gpt(), adapter(poison=True)),
     lora.LoRAError, [r"lora_A holds 1 NaN value", "retrain it"]),
    ("NaN mixing weight", lambda: lora.combine_adapters([adapter(), adapter()], [float("nan"), 0.5]),
     ValueError, [r"weights\[0\] must be a finite number, got nan"]),
    ("one number as the mixing weights", lambda: lora.combine_adapters([adapter(), adapter()], 0.5),
     TypeError, ["weights must be a list of numbers, one per adapter"]),
    ("adapters of models of different sizes", lambda: lora.combine_adapters([adapter(), adapter(d_model=16)], [0.5, 0.5]),
     lora.LoRAError, [r"adapter 1 changes blocks.0.self_attn.q_proj by a \[16, 16\] matrix, adapter 0 by a \[8, 8\]",
                      "different sizes"]),
    # word2vec
    ("word2vec: no pair in the corpus", lambda: word2vec.train_skipgram([["a"], ["b"]] * 10, min_count=1, epochs=1),
     ValueError, ["no sentence has two words of the vocabulary", "no \\(center, context\\) pair", "sentences of several words"]),
    ("word2vec: a generator used up by build_vocab",
     lambda: word2vec.train_skipgram((s for s in [["a", "b", "c"]] * 20), min_count=1, epochs=1),
     ValueError, ["it is an iterator, and build_vocab used it up; pass a list of sentences"]),
    ("word2vec: dim 0", lambda: word2vec.train_skipgram([["a", "b"]] * 5, min_count=1, dim=0),
     ValueError, ["dim must be an integer >= 1, got 0"]),
    ("word2vec: NaN learning rate", lambda: word2vec.train_skipgram([["a", "b"]] * 5, min_count=1, lr=float("nan")),
     ValueError, ["lr must be a finite number > 0, got nan"]),
    ("word vectors with NaN", lambda: word2vec.WordVectors(["a", "b"], np.array([[1.0, np.nan], [1.0, 0.0]])),
     ValueError, ["word 'a' has a vector with NaN", "lower learning rate"]),
    # data loaders and training settings
    ("a batch of 0 windows", lambda: lm_data.random_batch(torch.arange(100), 0, 8, torch.Generator()),
     ValueError, [r"batch_size must be an integer >= 1, got 0"]),
    ("every 0th poem held out", lambda: lm_data.split_poems([1, 2, 3], 0), ValueError, [r"val_every must be an integer >= 2, got 0"]),
    ("five poems to train on", lambda: train.run(dataclasses.replace(TINY_CONFIG, max_poems=5), device="cpu", progress=False),
     ValueError, ["max_poems=5 leaves 0 validation poems", "at least 20 are needed"]),
    ("max_steps 0", lambda: train.run(dataclasses.replace(TINY_CONFIG, max_steps=0), device="cpu"),
     ValueError, [r"max_steps must be an integer >= 1, got 0"]),
    ("batch_size 0", lambda: train.run(dataclasses.replace(TINY_CONFIG, batch_size=0), device="cpu"),
     ValueError, [r"batch_size must be an integer >= 1, got 0"]),
    ("NaN learning rate", lambda: train.run(dataclasses.replace(TINY_CONFIG, learning_rate=float("nan")), device="cpu"),
     ValueError, [r"learning_rate must be a finite number > 0, got nan"]),
    ("eval_every 0", lambda: train.run(dataclasses.replace(TINY_CONFIG, eval_every=0), device="cpu"),
     ValueError, [r"eval_every must be an integer >= 1, got 0"]),
    ("an unknown device", lambda: train.run(TINY_CONFIG, device="nonsense"),
     ValueError, [r"unknown device 'nonsense': use one of \['cpu', 'cuda', 'mps'\]"]),
    pytest.param("an absent device", lambda: train.run(TINY_CONFIG, device=ABSENT), RuntimeError,
                 [f"device '{ABSENT}' was asked for but is not available here: use 'cpu'"], id="an absent device",
                 marks=pytest.mark.skipif(ABSENT is None, reason="CUDA and MPS are both present")),
]


@pytest.mark.parametrize("what,call,error,patterns", BAD_CALLS,
                         ids=[getattr(c, "id", None) or c[0] for c in BAD_CALLS])
def test_bad_input_gets_a_clear_error(what, call, error, patterns):
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message, "one line"
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


def test_a_failed_add_lora_changes_nothing():
    model = tiny_gpt()
    with pytest.raises(ValueError):
        lora.add_lora(model, ("q_proj",), alpha=float("nan"))
    assert not lora.lora_layers(model) and all(p.requires_grad for p in model.parameters())


def test_an_adapter_with_nan_or_broken_metadata_is_refused(tmp_path):
    poisoned = adapter(poison=True)
    with pytest.raises(lora.LoRAError, match="lora_A holds 1 NaN value"):
        lora.save_lora(poisoned, tmp_path / "refused.safetensors")
    assert not (tmp_path / "refused.safetensors").exists()
    metadata = {"format": lora.FORMAT, "r": "2", "alpha": "4.0", "modules": json.dumps(poisoned.modules),
                "targets": "[]"}
    save_file(poisoned.tensors, str(tmp_path / "nan.safetensors"), metadata=metadata)   # as a damaged copy would be
    with pytest.raises(lora.LoRAError, match=r"nan.safetensors: .*lora_A holds 1 NaN value.*restore the file"):
        lora.read_adapter(tmp_path / "nan.safetensors")
    good = adapter()
    save_file({k: v.contiguous() for k, v in good.tensors.items()}, str(tmp_path / "meta.safetensors"),
              metadata={"format": lora.FORMAT, "r": "two", "alpha": "4", "modules": "[]", "targets": "[]"})
    with pytest.raises(lora.LoRAError, match=r"meta.safetensors is damaged: its metadata .* save the adapter again"):
        lora.read_adapter(tmp_path / "meta.safetensors")


def test_get_device_takes_a_torch_device_and_an_index():
    assert get_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'cuda:x'"):
        get_device("cuda:x")


# ----------------------------------------------------------------------- damaged files

@pytest.fixture(scope="module")
def tang_bytes():
    return (data_module.DATA_DIR / "tang_poems.tsv").read_bytes()


def corpus(tmp_path, monkeypatch, content: bytes | None, name="tang_poems.tsv"):
    """data/ replaced by a folder holding `content` as the corpus (a folder if None)."""
    if content is None:
        (tmp_path / name).mkdir()
    else:
        (tmp_path / name).write_bytes(content)
    monkeypatch.setattr(data_module, "DATA_DIR", tmp_path)


RESTORE = r"git checkout -- data/tang_poems.tsv.*python data/make_poetry.py"
DAMAGED_CORPORA = [
    ("cut short at a line end", lambda b: b[:b.index(b"\n", len(b) // 2) + 1],
     [r"not the book's file: its SHA-256 is", r"it holds 2[0-9],[0-9]{3} poems where the book's holds 53,796: cut short", RESTORE]),
    ("cut short inside a line", lambda b: b[:b.index(b"\t", len(b) // 2) + 1],
     [r"tang_poems.tsv, line 2[0-9]{4}: expected author, title and body separated by tabs, got 2", RESTORE]),
    ("cut inside a character", lambda b: b[:b.index("春".encode()) + 1],
     [r"is not UTF-8 text \(byte 0xe6 on line \d+ cannot be decoded\)", RESTORE]),
    ("one character changed", lambda b: b.replace("春".encode(), "秋".encode(), 1),
     [r"not the book's file.*a character was changed", RESTORE]),
    ("Windows line ends", lambda b: b.replace(b"\n", b"\r\n"), ["Windows line ends \\(CRLF\\)", RESTORE]),
    ("saved as GB18030", lambda b: b.decode("utf-8").encode("gb18030"), ["is not UTF-8 text", RESTORE]),
    ("empty", lambda b: b"", ["it holds 0 poems where the book's holds 53,796", RESTORE]),
    ("a folder", None, ["tang_poems.tsv is a folder, not a file: remove it, then", RESTORE]),
]


@pytest.mark.parametrize("what,damage,patterns", DAMAGED_CORPORA, ids=[c[0] for c in DAMAGED_CORPORA])
def test_a_damaged_corpus_is_refused_with_the_command_that_restores_it(what, damage, patterns, tang_bytes,
                                                                       tmp_path, monkeypatch):
    corpus(tmp_path, monkeypatch, None if damage is None else damage(tang_bytes))
    with pytest.raises(DataError) as raised:
        data_module.load_tang_poems()
    for pattern in patterns:
        assert re.search(pattern, str(raised.value)), f"{pattern!r} not in {raised.value}"


def test_a_byte_order_mark_is_ignored(tang_bytes, tmp_path, monkeypatch):
    poems = data_module.load_tang_poems()
    corpus(tmp_path, monkeypatch, data_module.BOM + tang_bytes)
    assert data_module.load_tang_poems() == poems


def test_the_song_ci_are_checked_too(tmp_path, monkeypatch):
    raw = (data_module.DATA_DIR / "song_ci.tsv").read_bytes()
    corpus(tmp_path, monkeypatch, raw.replace("月".encode(), "日".encode(), 1), name="song_ci.tsv")
    with pytest.raises(DataError, match=r"song_ci.tsv is not the book's file.*git checkout -- data/song_ci.tsv"):
        data_module.load_song_ci()


@pytest.mark.parametrize("what,damage,pattern", [
    ("card not JSON", lambda d: (d / pretrained.CARD).write_text("{ not json"),
     r"minigpt_tang.json is not valid JSON .*git checkout -- data/minigpt_tang.json"),
    ("card without its checksum", lambda d: (d / pretrained.CARD).write_text("{}"),
     r"minigpt_tang.json has no weights_sha256 .*git checkout -- data/minigpt_tang.json"),
    ("weights cut short", lambda d: (d / pretrained.WEIGHTS).write_bytes((d / pretrained.WEIGHTS).read_bytes()[:5000]),
     r"not the model its card describes.*git checkout -- data/minigpt_tang.safetensors"),
    ("weights a folder", lambda d: ((d / pretrained.WEIGHTS).unlink(), (d / pretrained.WEIGHTS).mkdir()),
     r"minigpt_tang.safetensors is a folder, not a file"),
])
def test_a_damaged_model_card_or_weights_file_is_named(what, damage, pattern, tmp_path, monkeypatch):
    for name in (pretrained.WEIGHTS, pretrained.CARD):
        shutil.copy(data_module.DATA_DIR / name, tmp_path / name)
    damage(tmp_path)
    monkeypatch.setattr(data_module, "DATA_DIR", tmp_path)
    with pytest.raises((DataError, CheckpointError), match=pattern):
        pretrained.load_pretrained()


@dataclasses.dataclass
class SavedConfig:
    hidden: int = 8


@pytest.fixture
def odd_files(tmp_path):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(20_000))
    torch.save({"format": 1, "model": {}}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "folder.pt").mkdir()
    torch.save({"format": 1, "model": {}, "extra": {"config": SavedConfig()}}, tmp_path / "object.pt")
    return tmp_path


@pytest.mark.parametrize("name,pattern", [
    ("random.pt", r"truncated or corrupt \(20000 bytes; it does not begin like a zip archive.*earlier checkpoint"),
    ("legacy.pt", r"PyTorch's old \(pre-1.6\) file format.*save it again with save_checkpoint"),
    ("folder.pt", r"is a folder, not a checkpoint file: give the path of a checkpoint file"),
    ("object.pt", r"holds a Python object of class \S*SavedConfig.*only if you trust the file"),
])
def test_files_that_are_not_checkpoints_are_named_for_what_they_are(name, pattern, odd_files):
    with pytest.raises(CheckpointError, match=pattern) as raised:
        load_checkpoint(odd_files / name, nn.Linear(2, 2))
    if name != "object.pt":                 # only a real object may come with the advice of last resort
        assert NEVER not in str(raised.value)


# ------------------------------------------------------------------------- the commands

ARGPARSE = "argparse"    # the error comes from the command line parser (usage line, exit status 2)


@pytest.mark.parametrize("argv,patterns", [
    (["--max-steps", "0"], ["argument --max-steps: expected a positive whole number of steps, got '0'"]),
    (["--max-steps", "-5"], ["argument --max-steps: expected a positive whole number of steps, got '-5'"]),
    (["--log-every", "-1"], ["argument --log-every: expected 0 \\(never\\) or a positive whole number"]),
    (["--device", "nonsense"], ["unknown device 'nonsense': use one of"]),
    pytest.param(["--device", ABSENT or "cuda"], ["was asked for but is not available here: use 'cpu'"],
                 marks=pytest.mark.skipif(ABSENT is None, reason="CUDA and MPS are both present")),
    (["--resume", "--overwrite"], ["argument --overwrite: not allowed with argument --resume"]),
    (["--extend", "--overwrite"], ["--extend continues a run and --overwrite starts it over: choose one"]),
    (["--out", "{file}"], [r"--out .*afile is not a folder: .*afile is a file; choose another --out"]),
    (["--out", "{file}/run"], [r"--out .*afile/run is not a folder: .*afile, on its path, is a file; choose"]),
    (["--out", "{empty}", "--resume"], [r"no checkpoint at .*checkpoint.pt; start without --resume"]),
    (["--out", "{random}", "--resume"], [r"truncated or corrupt .*it does not begin like a zip archive", "earlier checkpoint"]),
    (["--out", "{folder}", "--resume"], [r"checkpoint.pt is a folder, not a checkpoint file"]),
])
def test_training_command_refuses_bad_arguments_before_training(argv, patterns, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "checkpoint.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "folder" / "checkpoint.pt").mkdir(parents=True)
    monkeypatch.setattr(train, "load_data", lambda config: pytest.fail("data loaded before the arguments were checked"))
    argv = [a.format(file=tmp_path / "afile", empty=tmp_path / "empty", random=tmp_path / "random",
                     folder=tmp_path / "folder") for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    code, _, err = run(train.main, TINY + argv, capsys)
    assert code == 2 and err.startswith(("error: ", "usage: "))
    for pattern in patterns:
        assert re.search(pattern, err), f"{pattern!r} not in {err!r}"
    assert NEVER not in err


def test_an_output_folder_that_cannot_be_written_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "load_data", lambda config: pytest.fail("data loaded before --out was checked"))
    if os.geteuid() != 0:                      # root may write into a read-only folder: simulated below
        (tmp_path / "locked").mkdir(mode=0o555)
        code, _, err = run(train.main, [*TINY, "--out", tmp_path / "locked" / "run"], capsys)
        assert code == 2 and "cannot be written to (Permission denied): choose another --out" in err

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(checks, "open", read_only, raising=False)
    code, _, err = run(train.main, [*TINY, "--out", tmp_path / "ro"], capsys)
    assert code == 2 and "--out" in err and "cannot be written to (Read-only file system): choose another --out" in err

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checks, "open", full, raising=False)
    code, _, err = run(train.main, [*TINY, "--out", tmp_path / "full"], capsys)
    assert code == 2 and "(No space left on device): free some space on its disk" in err
    monkeypatch.undo()
    monkeypatch.setattr(train, "load_data", lambda config: pytest.fail("data loaded before --out was checked"))
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=1000))
    code, _, err = run(train.main, [*TINY, "--out", tmp_path / "small"], capsys)
    assert code == 2 and "only 0.0 MB are free on its disk and this needs about" in err


@pytest.mark.parametrize("case,patterns", [
    ("missing", [r"no checkpoint at .*missing.pt: the file is missing", "python -m encoding_world.train"]),
    ("random", [r"truncated or corrupt", "python -m encoding_world.train"]),
    ("truncated", [r"truncated or corrupt .*failed finding central directory", "copy it again"]),
    ("a folder", [r"is a folder, not a checkpoint file: give the path of a checkpoint file"]),
    ("--out a file", [r"--out .*afile is not a folder"]),
])
def test_exporter_refuses_bad_input_before_evaluating(case, patterns, run30, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pretrained, "load_data", lambda config: pytest.fail("evaluation started before the checks"))
    (tmp_path / "afile").write_text("x")
    good = (run30 / "checkpoint.pt").read_bytes()
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "truncated.pt").write_bytes(good[:len(good) // 2])
    (tmp_path / "good.pt").write_bytes(good)
    checkpoint, out = {"missing": ("missing.pt", "out"), "random": ("random.pt", "out"),
                       "truncated": ("truncated.pt", "out"), "a folder": ("", "out"),
                       "--out a file": ("good.pt", "afile")}[case]
    code, _, err = run(pretrained.main, [tmp_path / checkpoint, "--out", tmp_path / out, "--training-seconds", "1"],
                       capsys)
    assert code == 2
    for pattern in patterns:
        assert re.search(pattern, err), f"{pattern!r} not in {err!r}"
    assert NEVER not in err and not (tmp_path / "out").exists()
