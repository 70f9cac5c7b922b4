"""Train the mini-GPT on Tang poems: `python -m encoding_world.train --config NAME`.

    python -m encoding_world.train --config lesson             # ~40 seconds on 2 CPU cores
    python -m encoding_world.train --config cpu-full           # ~30 minutes on 2 CPU cores
    python -m encoding_world.train --config gpu                # the book's full model, one GPU
    python -m encoding_world.train --config cpu-full --resume  # carry on after an interruption
    python -m encoding_world.train --config lesson --arch llama --n-kv-head 2   # lesson 14's LLaMA-style twin
    python -m encoding_world.train --data mine.txt --documents lines   # your own text
    torchrun --nproc_per_node=8 -m encoding_world.train --config gpu   # 8 GPUs, DDP

(`python -m encoding_world.sample` writes with what it trained.) Under torchrun every process
draws the same seeded stream of global batches of batch_size windows and trains on its share
(DistributedDataParallel: NCCL on CUDA, gloo on the CPU), accumulating micro_batch_size windows
at a time if asked; only rank 0 logs, evaluates and writes checkpoints.

The device is chosen automatically (CUDA, then Apple MPS, then the CPU). On CUDA the model
trains under bf16 autocast where the GPU has native bf16, else float16 with a gradient
scaler (`runtime.autocast_dtype`), and, where the config asks for it, torch.compile;
ENCODING_WORLD_AUTOCAST=bf16|fp16 rehearses either on the CPU. Validation runs
every `eval_every` steps on a fixed set of held-out windows; a checkpoint holding the model,
the optimizer, the step and every random state is written atomically every
`checkpoint_every` steps, so a run killed at any moment and restarted with --resume ends
exactly where an uninterrupted run would.

Nothing written before is lost: a folder that already holds a run is only continued
(--resume) or, when asked for explicitly, started over (--overwrite); Ctrl-C stops the run
and prints the step of the last checkpoint and the command that continues from it. A
finished run can be made longer deliberately with --extend (see EXTEND_HELP).
"""
import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import lm_data
from .checks import check_int, check_number, check_output_folder
from .data import DOCUMENT_LAYOUTS, DataError, load_documents, load_tang_poems
from .gpt import GPT, GPTConfig
from .llama import LlamaGPT, LlamaGPTConfig
from .runtime import DeviceUnavailableError, autocast, get_device, grad_scaler, set_seed
from .training import (
    CheckpointError,
    _unwrap,
    load_checkpoint,
    read_checkpoint,
    remove_leftover_temporaries,
    save_checkpoint,
    write_atomically,
)


@dataclass
class TrainConfig:
    vocab_size: int = 3000
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    batch_size: int = 32
    max_steps: int = 1000
    learning_rate: float = 3e-3
    min_learning_rate: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_windows: int = 256      # held-out windows of block_size tokens scored at each evaluation
    checkpoint_every: int = 100
    compile: bool = False        # torch.compile (any device; eager mode, with one line said, if it fails)
    max_poems: int | None = None  # use only the first poems, or documents of --data (tiny test runs)
    seed: int = 0
    data: str | None = None      # a UTF-8 text file to train on instead of the Tang poems
    documents: str | None = None  # how --data separates documents: "blank-lines" or "lines"
    micro_batch_size: int | None = None  # windows per forward pass and process (None: batch_size / processes);
                                         # fewer accumulate gradients, so batch_size is the global batch
    arch: str = "gpt"            # "gpt": the mini-GPT (lesson 12); "llama": its LLaMA-style twin (lesson 14)
    n_kv_head: int | None = None  # "llama" only: key/value heads (None = n_head; fewer = grouped-query)

    def model_config(self) -> GPTConfig | LlamaGPTConfig:
        """The configuration of the model `arch` names: a GPTConfig, or the LlamaGPTConfig twin
        (same vocabulary, context, depth, heads and width; RMSNorm, SwiGLU, RoPE, n_kv_head)."""
        config = GPTConfig(vocab_size=self.vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                           n_head=self.n_head, d_model=self.d_model, dropout=self.dropout)
        if self.arch == "llama":
            return LlamaGPTConfig.from_gpt_config(config, n_kv_head=self.n_kv_head)
        return config


ARCHS = ("gpt", "llama")


def build_model(config: "TrainConfig", vocab=None):
    """A freshly initialised model of config.arch: gpt.GPT or llama.LlamaGPT (with --data, sized
    to the vocabulary built from the file: see model_config)."""
    model = config.model_config() if vocab is None else model_config(config, vocab)
    return (LlamaGPT if config.arch == "llama" else GPT)(model)


CONFIGS = {
    # For tests of the training machinery: seconds, on a slice of the corpus.
    "tiny": TrainConfig(vocab_size=400, block_size=32, n_layer=2, n_head=2, d_model=32, batch_size=16,
                        max_steps=200, warmup_steps=10, eval_every=50, eval_windows=32,
                        checkpoint_every=25, max_poems=2000),
    # Lesson 12's configuration: about 40 seconds on 2 idle CPU cores (300 steps of ~0.11 s, plus
    # 10 evaluations), so that the whole lesson fits its 90-second budget; by the end it is well
    # below the unigram baseline and still improving.
    "lesson": TrainConfig(vocab_size=3000, block_size=64, n_layer=2, n_head=4, d_model=128, batch_size=32,
                          max_steps=300, warmup_steps=30, eval_every=30, eval_windows=256,
                          checkpoint_every=100),
    # The most a 2-core CPU does in about half an hour.
    "cpu-full": TrainConfig(vocab_size=3000, block_size=64, n_layer=4, n_head=4, d_model=192, batch_size=48,
                            max_steps=4000, learning_rate=2e-3, min_learning_rate=2e-4, warmup_steps=100,
                            eval_every=250, eval_windows=1024, checkpoint_every=250),
    # The book's full model, trained on one GPU.
    "gpu": TrainConfig(vocab_size=3000, block_size=128, n_layer=6, n_head=6, d_model=384, dropout=0.1,
                       batch_size=128, max_steps=5000, learning_rate=1e-3, min_learning_rate=1e-4,
                       warmup_steps=200, eval_every=250, eval_windows=2048, checkpoint_every=500,
                       compile=True),
}


def check_config(config: TrainConfig) -> None:
    """ValueError (or TypeError) naming the first setting of `config` that cannot work."""
    for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "batch_size", "max_steps",
                 "eval_every", "checkpoint_every"):
        check_int(name, getattr(config, name), low=3 if name == "vocab_size" else 1)
    check_int("warmup_steps", config.warmup_steps, low=0)
    for name in ("eval_windows", "max_poems", "micro_batch_size"):
        if getattr(config, name) is not None:
            check_int(name, getattr(config, name), low=1)
    check_number("learning_rate", config.learning_rate, low=0, low_open=True)
    check_number("min_learning_rate", config.min_learning_rate, low=0, high=config.learning_rate)
    check_number("weight_decay", config.weight_decay, low=0)
    check_number("grad_clip", config.grad_clip, low=0, low_open=True)
    check_number("dropout", config.dropout, low=0, high=1, high_open=True)
    if config.d_model % config.n_head:
        raise ValueError(f"d_model ({config.d_model}) must be divisible by n_head ({config.n_head})")
    if config.data is not None and config.documents not in DOCUMENT_LAYOUTS:
        raise ValueError(f"--data needs --documents {' or '.join(DOCUMENT_LAYOUTS)}: say whether the file "
                         f"separates its documents by blank lines or holds one per line (got {config.documents!r})")
    if config.data is None and config.documents is not None:
        raise ValueError("--documents says how a --data file is cut into documents: give --data PATH too")

    if config.arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(map(repr, ARCHS))}, got {config.arch!r}")
    if config.n_kv_head is not None:
        if config.arch != "llama":
            raise ValueError(f"n_kv_head={config.n_kv_head} is a setting of arch='llama' (grouped-query "
                             f"attention); the GPT has one key/value head per head: leave n_kv_head None")
        check_int("n_kv_head", config.n_kv_head, low=1)
    if config.arch == "llama":
        config.model_config()          # raises a ValueError naming what the LLaMA-style model cannot have


def model_config(config: TrainConfig, vocab) -> GPTConfig | LlamaGPTConfig:
    """The model that `config` trains on data with `vocab`: with --data, vocab_size is only the
    most characters allowed, and the model has exactly the vocabulary's tokens (no id it could
    write is without a character)."""
    model = config.model_config()
    return dataclasses.replace(model, vocab_size=len(vocab)) if config.data is not None else model


def batch_split(config: TrainConfig, processes: int) -> tuple[int, int]:
    """(windows per process per step, micro-batches each process accumulates): the global
    batch of batch_size windows is shared out evenly, micro_batch_size windows at a time."""
    if config.batch_size % processes:
        raise ValueError(f"batch_size {config.batch_size} (the global batch) cannot be shared evenly by "
                         f"{processes} processes: use a number of processes that divides it")
    per_process = config.batch_size // processes
    micro = config.micro_batch_size or per_process
    if per_process % micro:
        raise ValueError(f"each of {processes} process(es) takes {per_process} windows of the global batch "
                         f"({config.batch_size}), which micro_batch_size {micro} does not divide: choose a "
                         f"--micro-batch-size that divides {per_process}")
    return per_process, per_process // micro


def checkpoint_bytes(config: TrainConfig) -> int:
    """About how many bytes a checkpoint of `config` takes: the weights and AdamW's two
    moments, 4 bytes each, for V·d + block·d + n_layer·(12·d² + 2·d) + d parameters (the
    GPT's count; the LLaMA-style twin's is within a few per cent of it)."""
    d = config.d_model
    parameters = (config.vocab_size + config.block_size) * d + config.n_layer * (12 * d * d + 2 * d) + d
    return 3 * 4 * parameters + (1 << 16)


def cosine_lr(step: int, peak: float, floor: float, warmup: int, total: int) -> float:
    """The learning rate at `step` (counted from 0): a linear warm-up over `warmup` steps to
    `peak`, then half a cosine down to `floor` at step `total`, and `floor` after it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - floor)


@dataclass
class PoemData:
    vocab: lm_data.CharVocab
    train: torch.Tensor
    val: torch.Tensor
    sha256: str | None = None      # of the --data file (None for the book's poems)


# The token that ends a document of a --data file cut at blank lines, whose documents may hold
# newlines: PARAGRAPH SEPARATOR, which plain text files do not otherwise contain.
DOCUMENT_END = "\u2029"


def load_text_data(config: TrainConfig) -> PoemData:
    """A --data file as training and validation streams: every 20th document is held out,
    the vocabulary is every character of the training documents (an error if there are
    more than vocab_size − 2), and each document ends with the end token (id 0)."""
    documents, digest = load_documents(config.data, config.documents)
    end = lm_data.END if config.documents == "lines" else DOCUMENT_END
    if config.documents == "blank-lines":
        for number, doc in enumerate(documents, 1):
            if end in doc:
                raise DataError(f"--data {config.data}: document {number} contains U+2029 PARAGRAPH SEPARATOR, "
                                f"which ends documents in the model's vocabulary: replace it by a blank line")
    if config.max_poems is not None:
        documents = documents[: config.max_poems]
    train_docs, val_docs = lm_data.split_poems(documents)
    where = f"--data {config.data} ({config.documents})"
    if not val_docs:
        raise ValueError(f"{where} holds {len(documents)} document(s): every 20th is held out for validation, so "
                         f"at least 20 are needed. Add text, or check --documents (with lines, each line is one)")
    chars = {c for doc in train_docs for c in doc} - {end, lm_data.UNKNOWN}
    if len(chars) > config.vocab_size - 2:
        raise ValueError(f"{where}: its training documents hold {len(chars)} distinct characters, more than "
                         f"vocab_size {config.vocab_size} allows ({config.vocab_size - 2} plus the end and unknown "
                         f"tokens): pass --vocab-size {len(chars) + 2} (or more)")
    vocab = lm_data.CharVocab.build(train_docs, config.vocab_size, end=end)
    data = PoemData(vocab, lm_data.encode_documents(train_docs, vocab), lm_data.encode_documents(val_docs, vocab),
                    digest)
    for name, stream, docs in (("training", data.train, train_docs), ("validation", data.val, val_docs)):
        if len(stream) <= config.block_size:
            raise ValueError(f"{where} is too small for block_size {config.block_size}: its {len(docs)} {name} "
                             f"document(s) hold {len(stream)} tokens, fewer than one window of block_size + 1 = "
                             f"{config.block_size + 1} (every 20th document is for validation). Add text, or "
                             f"train a config with a smaller block_size")
    return data


def load_data(config: TrainConfig) -> PoemData:
    if config.data is not None:
        return load_text_data(config)
    poems = load_tang_poems()
    if config.max_poems is not None:
        poems = poems[: config.max_poems]
    train_poems, val_poems = lm_data.split_poems(poems)
    vocab = lm_data.CharVocab.build((p.body for p in train_poems), config.vocab_size)
    data = PoemData(vocab, lm_data.encode_poems(train_poems, vocab), lm_data.encode_poems(val_poems, vocab))
    for name, stream, poems_in in (("training", data.train, train_poems), ("validation", data.val, val_poems)):
        if len(stream) <= config.block_size:
            raise ValueError(
                f"max_poems={config.max_poems} leaves {len(poems_in)} {name} poems, {len(stream)} characters: "
                f"fewer than one window of block_size + 1 = {config.block_size + 1}. Raise max_poems (every "
                f"20th poem is held out for validation, so at least 20 are needed), or leave it None")
    return data


def make_optimizer(parameters, lr: float, weight_decay: float = 0.0, device=None) -> torch.optim.AdamW:
    """AdamW (betas 0.9 and 0.95) over the parameters that train, with weight decay on
    matrices only (not on LayerNorm weights or biases); one fused kernel on CUDA."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("no parameter to train: every one given has requires_grad=False")
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = device is not None and torch.device(device).type == "cuda"
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.95), fused=fused)


def train_steps(model, optimizer, batches, steps: int, *, start: int = 0, lr_at=None, grad_clip: float | None = None,
                scaler=None, on_step=None, accumulate: int = 1) -> list[float]:
    """The book's one training loop for language models; returns the training losses.

    For each step from `start` to `steps` - 1: set the learning rate to lr_at(step) (if
    given), take the next `accumulate` (inputs, targets) micro-batches from `batches`, and
    for each run the forward pass under the device's autocast (`runtime.autocast`) and
    backward (through the gradient scaler, which is enabled only for float16) of its loss
    divided by `accumulate`, so that the gradients add up to those of the mean loss; then
    clip the gradients' norm to `grad_clip` (if given), step. After each step it calls
    on_step(step + 1, loss), where the caller evaluates, logs, saves a checkpoint, or raises
    to stop. `model` may be a torch.compile'd model, or a DistributedDataParallel one: its
    gradients are then averaged over the processes once per step (not per micro-batch), and
    the loss reported is the mean over every process's share of the global batch.
    """
    check_int("steps", steps, low=0)
    check_int("start", start, low=0, high=steps)
    check_int("accumulate", accumulate, low=1)
    device = next(model.parameters()).device
    scaler = grad_scaler(device) if scaler is None else scaler
    distributed = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    losses = []
    model.train()
    for step in range(start, steps):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in range(accumulate):
            try:
                x, y = next(batches)
            except StopIteration:
                raise ValueError(f"batches ran out at step {step + 1} of {steps} (micro-batch {micro + 1} of "
                                 f"{accumulate}): give at least (steps - start) × accumulate batches, e.g. "
                                 f"sft.sft_batches over steps × batch_size examples") from None
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # DDP averages the gradients over the processes in backward: only after the last micro-batch.
            sync = model.no_sync() if distributed and micro < accumulate - 1 else contextlib.nullcontext()
            with sync:
                with autocast(device):
                    loss = model(x, y)[1]
                # Without float16 the scaler passes everything through; dividing by 1 changes no bit.
                scaler.scale(loss / accumulate).backward()
            loss_sum = loss_sum + loss.detach()
        if grad_clip is not None:
            scaler.unscale_(optimizer)          # true gradients, before clipping them
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)                  # skipped if a float16 gradient overflowed
        scaler.update()
        mean = loss_sum / accumulate
        if distributed:
            torch.distributed.all_reduce(mean)  # the sum over processes, of equal shares
            mean = mean / torch.distributed.get_world_size()
        losses.append(mean.item())
        if on_step is not None:
            on_step(step + 1, losses[-1])
    return losses


class RunExistsError(FileExistsError):
    """The output folder already holds a run, and neither resuming nor starting over was asked for."""

    def __init__(self, folder: Path, step: int | None):
        self.folder, self.step = folder, step
        at = f" at step {step}" if step is not None else ""
        super().__init__(f"{folder} already holds a run (checkpoint.pt{at}): continue it with resume=True, "
                         f"start it over with overwrite=True (which deletes it), or give another out_dir")


def _saved_step(checkpoint: Path) -> int | None:
    """The step of a checkpoint file, or None if there is none or it cannot be read."""
    try:
        return read_checkpoint(checkpoint)["step"]
    except (OSError, CheckpointError):
        return None


# Settings that say how the steps are computed, not what they compute: a run may resume with
# them changed (the results then differ only by floating-point rounding), like the number of
# processes under torchrun.
HOW_SETTINGS = ("compile", "micro_batch_size")


def _config_differences(saved: dict, current: dict) -> dict:
    """{setting: (its value in the checkpoint, its value now)} for every setting that differs
    (those of HOW_SETTINGS aside)."""
    keys = list(current) + [key for key in saved if key not in current]
    return {key: (saved.get(key), current.get(key)) for key in keys
            if saved.get(key) != current.get(key) and key not in HOW_SETTINGS}


# What a checkpoint needs to hold for train() to carry on from it.
RESUME_FIELDS = ("train_config", "history", "vocab", "batch_rng", "torch_rng")


def _prepare_folder(checkpoint: Path, config: TrainConfig, resume: bool, overwrite: bool, log,
                    writer: bool = True) -> None:
    """Check, before any work, that the run's folder can be written to and holds no other
    run (unless resuming, or starting over on purpose); remove what killed writes left.
    Only the `writer` (rank 0 of a distributed run) deletes anything."""
    check_output_folder(checkpoint.parent, "--out", need_bytes=2 * checkpoint_bytes(config))
    if not resume and checkpoint.exists():
        if not overwrite:
            raise RunExistsError(checkpoint.parent, _saved_step(checkpoint))
        if writer:
            checkpoint.unlink(missing_ok=True)
            (checkpoint.parent / "summary.json").unlink(missing_ok=True)
    if not writer:
        return
    removed = remove_leftover_temporaries(checkpoint)
    if removed:
        log(f"removed {len(removed)} temporary file(s) left in {checkpoint.parent} by interrupted checkpoint writes")


def _check_resume(checkpoint: Path | None, config: TrainConfig, extend: bool) -> TrainConfig:
    """Check that the run can go on from `checkpoint` with `config`; return the config whose
    max_steps the learning-rate schedule follows (the run's first plan, when extended)."""
    if checkpoint is None or not checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}; start without --resume")
    extra = read_checkpoint(checkpoint)["extra"]
    missing = [field for field in RESUME_FIELDS if field not in extra]
    if missing:
        raise CheckpointError(f"{checkpoint} was not written by encoding_world.train (it lacks {missing}), "
                              f"so the run cannot be resumed from it: start a new run in another --out")
    # A setting added since the checkpoint was written had its default then (e.g. arch="gpt").
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    saved_config = defaults | extra["train_config"]
    differences = _config_differences(saved_config, dataclasses.asdict(config))
    longer = list(differences) == ["max_steps"] and config.max_steps > (saved_config.get("max_steps") or 0)
    if differences and not (extend and longer):
        listed = "; ".join(f"{key} is {old!r} in the checkpoint and {new!r} now"
                           for key, (old, new) in differences.items())
        hint = (" To train this run for more steps, add --extend (extend=True)." if longer else
                " --extend only makes a run longer; it cannot change other settings." if extend else "")
        raise CheckpointError(f"{checkpoint} was written with another configuration: {listed}. Resume with "
                              f"the same --config and settings as when it was started, or start a new run "
                              f"in another --out.{hint}")
    planned = extra.get("schedule_max_steps", saved_config.get("max_steps") or config.max_steps)
    return dataclasses.replace(config, max_steps=planned)


def distributed_setup(device=None):
    """(rank, processes, device) of this process. Under torchrun (WORLD_SIZE > 1) it joins the
    process group: NCCL with one GPU per process (cuda:LOCAL_RANK) on CUDA, gloo on the CPU;
    otherwise (0, 1, the device get_device chooses). Apple's MPS has no DDP backend."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes <= 1:
        return 0, 1, get_device(device)
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = get_device(device)
    if device.type == "mps":
        raise DeviceUnavailableError("torchrun on Apple's MPS: PyTorch has no distributed backend for it; "
                                     "train in one process (python -m encoding_world.train), or pass --device cpu")
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"--device {device} under torchrun: each process takes the GPU of its LOCAL_RANK; "
                             f"pass --device cuda (or none), and choose GPUs with CUDA_VISIBLE_DEVICES")
        if local_rank >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"process {rank} has LOCAL_RANK {local_rank} but this machine has "
                                         f"{torch.cuda.device_count()} GPU(s): start at most that many processes "
                                         f"per machine (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, processes, device


def weights_sha256(model) -> str:
    """The SHA-256 of every parameter's bytes, in order: equal on all processes of a run that works."""
    digest = hashlib.sha256()
    for name, tensor in _unwrap(model).state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _compile(model, example, device, log):
    """torch.compile(model), tried on one forward and backward pass of `example` (which changes
    no random state and leaves no gradient); the model itself, after one line saying why,
    when compiling fails (no C compiler, an unsupported GPU or Python version, ...)."""
    try:
        compiled = torch.compile(model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            with autocast(device):
                loss = compiled(*example)[1]
            loss.backward()
        return compiled
    except Exception as err:      # torch.compile fails in many ways, each with its own type
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        log(f"torch.compile failed ({type(err).__name__}: {reason[:200]}); training in eager mode instead")
        return model
    finally:
        model.zero_grad(set_to_none=True)


def run(config: TrainConfig | str, out_dir=None, resume: bool = False, device=None, progress: bool | None = None,
        log_every: int = 0, log=print, overwrite: bool = False, extend: bool = False, on_step=None):
    """Train a model with `config` (a TrainConfig or a name in CONFIGS); return (model, vocab, history).

    The model is a gpt.GPT, or with config.arch == "llama" a llama.LlamaGPT (`build_model`);
    everything else (data, optimizer, schedule, evaluation, checkpoints) is the same for both.

    history: {"step": [...], "train_loss": [...], "val_loss": [...], "tokens_per_second": float, ...}.
    With out_dir, checkpoints go to out_dir/checkpoint.pt; resume=True continues from it.
    A folder that already holds a checkpoint is refused unless resume=True (continue) or
    overwrite=True (delete it and start over). extend=True resumes a run with a larger
    max_steps than it was started with (see EXTEND_HELP). Every check (the configuration,
    the device, the folder can be written, the checkpoint to resume) is made before any
    data is loaded. on_step(step, train_loss), if given, is called after each step's
    evaluation and checkpoint (lessons 12 and 18 raise from it to play a power cut).

    Under torchrun (WORLD_SIZE > 1) every process calls run: each draws the same seeded
    stream of global batches and trains on its own share of every batch with
    DistributedDataParallel; only rank 0 logs, evaluates and writes checkpoints, and the
    other processes return an empty history. A run resumes with any number of processes
    that divides batch_size.
    """
    if isinstance(config, str):
        config = named_config(config)
    check_config(config)
    check_int("log_every", log_every, low=0)
    rank, processes, device = distributed_setup(device)
    try:
        return _run(config, out_dir, resume, device, progress, log_every, log, overwrite, extend, on_step,
                    rank, processes)
    finally:
        if processes > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(config, out_dir, resume, device, progress, log_every, log, overwrite, extend, on_step, rank, processes):
    writer = rank == 0
    if not writer:
        log = lambda message: None          # only rank 0 speaks
    per_process, accumulate = batch_split(config, processes)
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    resume = resume or extend
    if checkpoint is not None:
        _prepare_folder(checkpoint, config, resume, overwrite, log, writer)
    schedule = _check_resume(checkpoint, config, extend) if resume else config
    set_seed(config.seed)
    data = load_data(config)
    model = build_model(config, data.vocab).to(device)
    optimizer = make_optimizer(model.parameters(), config.learning_rate, config.weight_decay, device)
    scaler = grad_scaler(device)        # enabled only for float16 training (GPUs without bf16)
    generator = torch.Generator().manual_seed(config.seed)   # draws the training windows, alike on every rank
    history = {"step": [], "train_loss": [], "val_loss": []}
    step = 0
    if processes > 1:
        torch.manual_seed(config.seed + rank)   # dropout: other masks on each rank (rank 0 as in one process)

    if resume:
        # Read onto the CPU: the random-number states must be CPU byte tensors (set_rng_state refuses
        # CUDA ones), and load_state_dict moves the weights and optimizer state to the model's device.
        saved = load_checkpoint(checkpoint, model, optimizer, map_location="cpu")
        if config.data is not None and saved.get("data_sha256") != data.sha256:
            raise CheckpointError(f"{checkpoint} was trained on another version of --data {config.data} (its "
                                  f"SHA-256 is now {data.sha256[:12]}…, the run began with "
                                  f"{str(saved.get('data_sha256'))[:12]}…): resume with the file as it was, or "
                                  f"start a new run in another --out")
        step, history = saved["step"], saved["history"]
        generator.set_state(saved["batch_rng"])
        rank_rngs = saved.get("rank_rngs")
        if processes == 1 or (rank_rngs is not None and len(rank_rngs) == processes):
            torch.set_rng_state(saved["torch_rng"] if processes == 1 else rank_rngs[rank])
        else:       # another number of processes: the batches go on alike, dropout's masks do not
            torch.manual_seed(config.seed + 1_000_003 * step + rank)
            if config.dropout > 0:
                log(f"resumed with {processes} processes where the run had {len(rank_rngs or [0])}: the batches "
                    f"continue as before, but dropout draws new masks, so the run will not end bit for bit where "
                    f"an uninterrupted one would")
        if device.type == "cuda" and saved.get("cuda_rng") is not None and processes == 1:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        if scaler.is_enabled() and saved.get("grad_scaler"):
            scaler.load_state_dict(saved["grad_scaler"])
        log(f"resumed from {checkpoint} at step {step}")
        if schedule.max_steps != config.max_steps:
            log(f"extended to {config.max_steps} steps: the learning rate follows the {schedule.max_steps}-step "
                f"plan, then stays at {config.min_learning_rate:g}")
    # Only an extended run records its plan, and only --data and torchrun runs record theirs: other
    # checkpoints keep exactly the fields they had.
    extension = {"schedule_max_steps": schedule.max_steps} if schedule.max_steps != config.max_steps else {}
    if data.sha256 is not None:
        extension["data_sha256"] = data.sha256
    if processes > 1:
        log(f"{processes} processes ({torch.distributed.get_backend()}), each {per_process} of the "
            f"{config.batch_size} windows of a step, in {accumulate} micro-batch(es)")
    elif accumulate > 1:
        log(f"{accumulate} micro-batches of {per_process // accumulate} windows per step")

    micro = per_process // accumulate
    trained = model
    if config.compile:
        example = lm_data.windows(data.train, config.block_size, range(micro))
        trained = _compile(model, tuple(t.to(device) for t in example), device, log)
    if processes > 1:
        from torch.nn.parallel import DistributedDataParallel
        trained = DistributedDataParallel(trained, device_ids=[device.index] if device.type == "cuda" else None)
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress and writer:
        from tqdm import tqdm
        bar = tqdm(total=config.max_steps, initial=step, unit="step", dynamic_ncols=True)
    validation = lm_data.consecutive_windows(data.val, config.block_size, config.eval_windows)

    def after_step(step: int, train_loss: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}")
        if log_every and step % log_every == 0:
            log(f"step {step} train loss {train_loss:.4f}")
        if writer and (step % config.eval_every == 0 or step == config.max_steps):
            val_loss = lm_data.mean_loss(model, validation, config.batch_size)
            history["step"].append(step)
            history["train_loss"].append(train_loss)
            history["val_loss"].append(val_loss)
            if bar is not None:
                bar.write(f"step {step}: train loss {train_loss:.4f}, validation loss {val_loss:.4f}")
        if checkpoint is not None and (step % config.checkpoint_every == 0 or step == config.max_steps):
            ranks = {}
            if processes > 1:       # every rank's own random state (dropout), gathered on rank 0
                states = [None] * processes
                torch.distributed.all_gather_object(states, torch.get_rng_state())
                ranks = {"rank_rngs": states}
            if writer:
                save_checkpoint(checkpoint, model, optimizer, step, train_config=dataclasses.asdict(config),
                                history=history, vocab=data.vocab.tokens, batch_rng=generator.get_state(),
                                torch_rng=torch.get_rng_state(),
                                cuda_rng=torch.cuda.get_rng_state() if device.type == "cuda" else None,
                                grad_scaler=scaler.state_dict() if scaler.is_enabled() else None,
                                **extension, **ranks)
        if on_step is not None:
            on_step(step, train_loss)

    def batches():
        """This process's micro-batches: its rows of each global batch, `micro` at a time."""
        rows = slice(rank * per_process, (rank + 1) * per_process)
        for x, y in lm_data.random_batches(data.train, config.batch_size, config.block_size, generator, rows):
            for i in range(0, per_process, micro):
                yield x[i:i + micro], y[i:i + micro]

    start = time.perf_counter()
    steps_before = step
    lr_at = functools.partial(cosine_lr, peak=schedule.learning_rate, floor=schedule.min_learning_rate,
                              warmup=schedule.warmup_steps, total=schedule.max_steps)
    train_steps(trained, optimizer, batches(), config.max_steps, start=step, lr_at=lr_at, grad_clip=config.grad_clip,
                scaler=scaler, on_step=after_step, accumulate=accumulate)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close()
    if processes > 1:
        hashes = [None] * processes
        torch.distributed.all_gather_object(hashes, weights_sha256(model))
        if len(set(hashes)) > 1:
            log(f"warning: the processes ended with different weights (SHA-256 {[h[:12] for h in hashes]}): "
                f"a bug in the distributed setup; the checkpoint holds rank 0's")
        history = dict(history, weights_sha256_by_rank=hashes) if writer else {}
    tokens = (config.max_steps - steps_before) * config.batch_size * config.block_size
    history["tokens_per_second"] = tokens / elapsed if elapsed > 0 else float("nan")
    history["seconds"] = elapsed
    return model, data.vocab, history


def named_config(name: str) -> TrainConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}: choose one of {', '.join(CONFIGS)}")
    return dataclasses.replace(CONFIGS[name])


# What --extend does (also in the README's training section).
EXTEND_HELP = ("resume a run with a larger --max-steps than it was started with; the learning rate "
               "keeps the run's original schedule and stays at its minimum for the added steps")


def resume_command(args, out: Path) -> str:
    """The command line that continues the run that `args` started (under torchrun, with
    the same number of processes on this machine)."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = (f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', processes)} -m encoding_world.train"
                if processes > 1 else "python -m encoding_world.train")
    parts = [launcher, f"--config {args.config}", f"--out {out}"]
    for option in ("data", "documents", "vocab_size", "max_steps", "arch", "n_kv_head"):
        if getattr(args, option) is not None:
            parts.append(f"--{option.replace('_', '-')} {getattr(args, option)}")
    return " ".join(parts + ["--resume"])


def _positive_int(text: str) -> int:
    try:
        return check_int("the value", int(text), low=1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of steps, got {text!r}") from None


def _head_count(text: str) -> int:
    try:
        return check_int("the value", int(text), low=1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of key/value heads, got {text!r}") from None


def _count(text: str) -> int:
    try:
        return check_int("the value", int(text), low=0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 0 (never) or a positive whole number, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the book's mini-GPT (or its LLaMA-style twin) on Tang poems, or on a text file of your own (--data). "
                    "Under torchrun (torchrun --nproc_per_node=N -m encoding_world.train ...) it trains "
                    "with DistributedDataParallel, batch_size staying the global batch.")
    parser.add_argument("--config", default="lesson", choices=list(CONFIGS))
    parser.add_argument("--arch", choices=ARCHS, help="the model: gpt (default) or llama, its LLaMA-style twin")
    parser.add_argument("--n-kv-head", type=_head_count,
                        help="with --arch llama: key/value heads (default: one per head; fewer = grouped-query)")
    parser.add_argument("--data", type=Path, help="a UTF-8 text file to train on instead of the Tang poems "
                                                  "(needs --documents; every 20th document is held out)")
    parser.add_argument("--documents", choices=DOCUMENT_LAYOUTS,
                        help="how --data separates documents: by blank lines, or one per line")
    parser.add_argument("--vocab-size", type=_positive_int,
                        help="override the config's vocabulary size (with --data: the most characters allowed, at "
                             "least the file's + 2; the model gets exactly the file's)")
    parser.add_argument("--out", type=Path, help="folder for checkpoint.pt (default: runs/CONFIG)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from the folder's checkpoint")
    start.add_argument("--overwrite", action="store_true",
                       help="delete the folder's checkpoint and start over (without it, a folder "
                            "that holds a run is refused)")
    parser.add_argument("--extend", action="store_true", help=EXTEND_HELP)
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--max-steps", type=_positive_int, help="override the config's number of steps")
    parser.add_argument("--micro-batch-size", type=_positive_int,
                        help="windows per forward pass and process; fewer than its share of the batch "
                             "accumulate gradients (same global batch, less memory)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the model (default: the config's choice; eager mode, said in one "
                             "line, if compiling fails)")
    parser.add_argument("--log-every", type=_count, default=0, help="print the training loss every N steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.extend and args.overwrite:
        parser.error("--extend continues a run and --overwrite starts it over: choose one")
    config = named_config(args.config)
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    for option in ("vocab_size", "micro_batch_size", "compile", "documents", "arch", "n_kv_head"):
        if getattr(args, option) is not None:
            setattr(config, option, getattr(args, option))
    if args.data is not None:
        config.data = str(args.data)
    rank = int(os.environ.get("RANK", "0"))
    out = args.out or Path("runs") / args.config
    checkpoint = out / "checkpoint.pt"

    def last_checkpoint() -> str:
        step = _saved_step(checkpoint)
        if step is None:
            return "no checkpoint was saved yet: run the same command again to start over"
        return f"the last checkpoint, at step {step}, is in {checkpoint}: continue with\n  {resume_command(args, out)}"

    try:
        model, vocab, history = run(config, out, resume=args.resume, device=args.device,
                                      progress=False if args.no_progress else None, log_every=args.log_every,
                                      log=lambda s: print(s, flush=True), overwrite=args.overwrite,
                                      extend=args.extend)
        if rank != 0:
            return 0                            # rank 0 writes the summary
        summary = {"config": args.config, "arch": config.arch, "steps": config.max_steps,
                   "final_val_loss": history["val_loss"][-1],
                   "tokens_per_second": history["tokens_per_second"], "seconds": history["seconds"],
                   "parameters": model.num_parameters(), "checkpoint": str(checkpoint)}
        if "weights_sha256_by_rank" in history:
            summary["weights_sha256_by_rank"] = history["weights_sha256_by_rank"]
        text = json.dumps(summary, indent=2) + "\n"
        write_atomically(out / "summary.json", lambda f: f.write(text.encode("utf-8")))
    except KeyboardInterrupt:
        print(f"\ninterrupted (Ctrl-C); {last_checkpoint()}", file=sys.stderr, flush=True)
        return 130
    except RunExistsError as err:
        at = f" at step {err.step}" if err.step is not None else ""
        print(f"error: {err.folder} already holds a run (checkpoint.pt{at}). Continue it with\n"
              f"  {resume_command(args, out)}\nstart it over with --overwrite (which deletes it), or choose "
              f"another --out", file=sys.stderr)
        return 2
    except (OSError, ValueError, CheckpointError, DeviceUnavailableError) as err:
        print(f"error{f' (rank {rank})' if rank else ''}: {err}", file=sys.stderr)
        if isinstance(err, OSError) and err.errno is not None and checkpoint.exists():
            print(f"once that is fixed, {last_checkpoint()}", file=sys.stderr)   # e.g. the disk filled up
        return 2
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
