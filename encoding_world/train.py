"""Train the mini-GPT on Tang poems: `python -m encoding_world.train --config NAME`.

    python -m encoding_world.train --config lesson             # ~40 seconds on 2 CPU cores
    python -m encoding_world.train --config cpu-full           # ~30 minutes on 2 CPU cores
    python -m encoding_world.train --config gpu                # the book's full model, one GPU
    python -m encoding_world.train --config cpu-full --resume  # carry on after an interruption
    python -m encoding_world.train --config lesson --arch llama --n-kv-head 2   # lesson 14's LLaMA-style twin

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
import dataclasses
import functools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import lm_data
from .checks import check_int, check_number, check_output_folder
from .data import load_tang_poems
from .gpt import GPT, GPTConfig
from .llama import LlamaGPT, LlamaGPTConfig
from .runtime import DeviceUnavailableError, autocast, get_device, grad_scaler, set_seed
from .training import (CheckpointError, load_checkpoint, read_checkpoint, remove_leftover_temporaries,
                       save_checkpoint, write_atomically)


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
    compile: bool = False        # torch.compile, on CUDA only
    max_poems: int | None = None  # use only the first poems (tiny test runs)
    seed: int = 0
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


def build_model(config: "TrainConfig"):
    """A freshly initialised model of config.arch: gpt.GPT or llama.LlamaGPT."""
    return (LlamaGPT if config.arch == "llama" else GPT)(config.model_config())


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
    for name in ("eval_windows", "max_poems"):
        if getattr(config, name) is not None:
            check_int(name, getattr(config, name), low=1)
    check_number("learning_rate", config.learning_rate, low=0, low_open=True)
    check_number("min_learning_rate", config.min_learning_rate, low=0, high=config.learning_rate)
    check_number("weight_decay", config.weight_decay, low=0)
    check_number("grad_clip", config.grad_clip, low=0, low_open=True)
    check_number("dropout", config.dropout, low=0, high=1, high_open=True)
    if config.d_model % config.n_head:
        raise ValueError(f"d_model ({config.d_model}) must be divisible by n_head ({config.n_head})")
    if config.arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(map(repr, ARCHS))}, got {config.arch!r}")
    if config.n_kv_head is not None:
        if config.arch != "llama":
            raise ValueError(f"n_kv_head={config.n_kv_head} is a setting of arch='llama' (grouped-query "
                             f"attention); the GPT has one key/value head per head: leave n_kv_head None")
        check_int("n_kv_head", config.n_kv_head, low=1)
    if config.arch == "llama":
        config.model_config()          # raises a ValueError naming what the LLaMA-style model cannot have


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


def load_data(config: TrainConfig) -> PoemData:
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
                scaler=None, on_step=None) -> list[float]:
    """The book's one training loop for language models; returns the training losses.

    For each step from `start` to `steps` - 1: set the learning rate to lr_at(step) (if
    given), take the next (inputs, targets) from `batches`, run the forward pass under the
    device's autocast (`runtime.autocast`), backward (through the gradient scaler, which is
    enabled only for float16), clip the gradients' norm to `grad_clip` (if given), step.
    After each step it calls on_step(step + 1, loss), where the caller evaluates, logs,
    saves a checkpoint, or raises to stop. `model` may be a torch.compile'd model.
    """
    check_int("steps", steps, low=0)
    check_int("start", start, low=0, high=steps)
    device = next(model.parameters()).device
    scaler = grad_scaler(device) if scaler is None else scaler
    losses = []
    model.train()
    for step in range(start, steps):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device):
            loss = model(x, y)[1]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()           # without float16 the scaler passes everything through
        if grad_clip is not None:
            scaler.unscale_(optimizer)          # true gradients, before clipping them
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)                  # skipped if a float16 gradient overflowed
        scaler.update()
        losses.append(loss.item())
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


def _config_differences(saved: dict, current: dict) -> dict:
    """{setting: (its value in the checkpoint, its value now)} for every setting that differs."""
    keys = list(current) + [key for key in saved if key not in current]
    return {key: (saved.get(key), current.get(key)) for key in keys if saved.get(key) != current.get(key)}


# What a checkpoint needs to hold for train() to carry on from it.
RESUME_FIELDS = ("train_config", "history", "vocab", "batch_rng", "torch_rng")


def _prepare_folder(checkpoint: Path, config: TrainConfig, resume: bool, overwrite: bool, log) -> None:
    """Check, before any work, that the run's folder can be written to and holds no other
    run (unless resuming, or starting over on purpose); remove what killed writes left."""
    check_output_folder(checkpoint.parent, "--out", need_bytes=2 * checkpoint_bytes(config))
    if not resume and checkpoint.exists():
        if not overwrite:
            raise RunExistsError(checkpoint.parent, _saved_step(checkpoint))
        checkpoint.unlink()
        (checkpoint.parent / "summary.json").unlink(missing_ok=True)
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
    """
    if isinstance(config, str):
        config = named_config(config)
    check_config(config)
    check_int("log_every", log_every, low=0)
    device = get_device(device)
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    resume = resume or extend
    if checkpoint is not None:
        _prepare_folder(checkpoint, config, resume, overwrite, log)
    schedule = _check_resume(checkpoint, config, extend) if resume else config
    set_seed(config.seed)
    data = load_data(config)
    model = build_model(config).to(device)
    optimizer = make_optimizer(model.parameters(), config.learning_rate, config.weight_decay, device)
    scaler = grad_scaler(device)        # enabled only for float16 training (GPUs without bf16)
    generator = torch.Generator().manual_seed(config.seed)   # draws the training windows
    history = {"step": [], "train_loss": [], "val_loss": []}
    step = 0

    if resume:
        saved = load_checkpoint(checkpoint, model, optimizer, map_location=device)
        step, history = saved["step"], saved["history"]
        generator.set_state(saved["batch_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        if scaler.is_enabled() and saved.get("grad_scaler"):
            scaler.load_state_dict(saved["grad_scaler"])
        log(f"resumed from {checkpoint} at step {step}")
        if schedule.max_steps != config.max_steps:
            log(f"extended to {config.max_steps} steps: the learning rate follows the {schedule.max_steps}-step "
                f"plan, then stays at {config.min_learning_rate:g}")
    # Only an extended run records its plan: other checkpoints keep exactly the fields they had.
    extension = {"schedule_max_steps": schedule.max_steps} if schedule.max_steps != config.max_steps else {}

    compiled = torch.compile(model) if config.compile and device.type == "cuda" else model
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=config.max_steps, initial=step, unit="step", dynamic_ncols=True)
    validation = lm_data.consecutive_windows(data.val, config.block_size, config.eval_windows)

    def after_step(step: int, train_loss: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}")
        if log_every and step % log_every == 0:
            log(f"step {step} train loss {train_loss:.4f}")
        if step % config.eval_every == 0 or step == config.max_steps:
            val_loss = lm_data.mean_loss(compiled, validation, config.batch_size)
            history["step"].append(step)
            history["train_loss"].append(train_loss)
            history["val_loss"].append(val_loss)
            if bar is not None:
                bar.write(f"step {step}: train loss {train_loss:.4f}, validation loss {val_loss:.4f}")
        if checkpoint is not None and (step % config.checkpoint_every == 0 or step == config.max_steps):
            save_checkpoint(checkpoint, model, optimizer, step, train_config=dataclasses.asdict(config),
                            history=history, vocab=data.vocab.tokens, batch_rng=generator.get_state(),
                            torch_rng=torch.get_rng_state(),
                            cuda_rng=torch.cuda.get_rng_state() if device.type == "cuda" else None,
                            grad_scaler=scaler.state_dict() if scaler.is_enabled() else None, **extension)
        if on_step is not None:
            on_step(step, train_loss)

    start = time.perf_counter()
    steps_before = step
    lr_at = functools.partial(cosine_lr, peak=schedule.learning_rate, floor=schedule.min_learning_rate,
                              warmup=schedule.warmup_steps, total=schedule.max_steps)
    train_steps(compiled, optimizer, lm_data.random_batches(data.train, config.batch_size, config.block_size, generator),
                config.max_steps, start=step, lr_at=lr_at, grad_clip=config.grad_clip, scaler=scaler,
                on_step=after_step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close()
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
    """The command line that continues the run that `args` started."""
    parts = ["python -m encoding_world.train", f"--config {args.config}", f"--out {out}"]
    if args.max_steps is not None:
        parts.append(f"--max-steps {args.max_steps}")
    if getattr(args, "arch", None) is not None:
        parts.append(f"--arch {args.arch}")
    if getattr(args, "n_kv_head", None) is not None:
        parts.append(f"--n-kv-head {args.n_kv_head}")
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
    parser = argparse.ArgumentParser(description="Train the book's mini-GPT (or its LLaMA-style twin) on Tang poems.")
    parser.add_argument("--config", default="lesson", choices=list(CONFIGS))
    parser.add_argument("--arch", choices=ARCHS, help="the model: gpt (default) or llama, its LLaMA-style twin")
    parser.add_argument("--n-kv-head", type=_head_count,
                        help="with --arch llama: key/value heads (default: one per head; fewer = grouped-query)")
    parser.add_argument("--out", type=Path, help="folder for checkpoint.pt (default: runs/CONFIG)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from the folder's checkpoint")
    start.add_argument("--overwrite", action="store_true",
                       help="delete the folder's checkpoint and start over (without it, a folder "
                            "that holds a run is refused)")
    parser.add_argument("--extend", action="store_true", help=EXTEND_HELP)
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--max-steps", type=_positive_int, help="override the config's number of steps")
    parser.add_argument("--log-every", type=_count, default=0, help="print the training loss every N steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.extend and args.overwrite:
        parser.error("--extend continues a run and --overwrite starts it over: choose one")
    config = named_config(args.config)
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.arch is not None:
        config.arch = args.arch
    if args.n_kv_head is not None:
        config.n_kv_head = args.n_kv_head
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
        summary = {"config": args.config, "arch": config.arch, "steps": config.max_steps,
                   "final_val_loss": history["val_loss"][-1],
                   "tokens_per_second": history["tokens_per_second"], "seconds": history["seconds"],
                   "parameters": model.num_parameters(), "checkpoint": str(checkpoint)}
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
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, OSError) and err.errno is not None and checkpoint.exists():
            print(f"once that is fixed, {last_checkpoint()}", file=sys.stderr)   # e.g. the disk filled up
        return 2
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
