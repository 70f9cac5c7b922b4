"""Train the mini-GPT on Tang poems: `python -m encoding_world.train --config NAME`.

    python -m encoding_world.train --config lesson             # ~40 seconds on 2 CPU cores
    python -m encoding_world.train --config cpu-full           # ~30 minutes on 2 CPU cores
    python -m encoding_world.train --config gpu                # the book's full model, one GPU
    python -m encoding_world.train --config cpu-full --resume  # carry on after an interruption

The device is chosen automatically (CUDA, then Apple MPS, then the CPU). On CUDA the model
trains under bf16 autocast where the GPU has native bf16, else float16 with a gradient
scaler (`runtime.autocast_dtype`), and, where the config asks for it, torch.compile;
ENCODING_WORLD_AUTOCAST=bf16|fp16 rehearses either on the CPU. Validation runs
every `eval_every` steps on a fixed set of held-out windows; a checkpoint holding the model,
the optimizer, the step and every random state is written atomically every
`checkpoint_every` steps, so a run killed at any moment and restarted with --resume ends
exactly where an uninterrupted run would.
"""
import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import lm_data
from .data import load_tang_poems
from .gpt import GPT, GPTConfig
from .runtime import autocast, autocast_dtype, get_device, grad_scaler, set_seed
from .training import CheckpointError, load_checkpoint, save_checkpoint


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

    def model_config(self) -> GPTConfig:
        return GPTConfig(vocab_size=self.vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, d_model=self.d_model, dropout=self.dropout)


CONFIGS = {
    # For tests of the training machinery: seconds, on a slice of the corpus.
    "tiny": TrainConfig(vocab_size=400, block_size=32, n_layer=2, n_head=2, d_model=32, batch_size=16,
                        max_steps=200, warmup_steps=10, eval_every=50, eval_windows=32,
                        checkpoint_every=25, max_poems=2000),
    # Lesson 10's configuration: about 40 seconds on 2 idle CPU cores (300 steps of ~0.11 s, plus
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


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up to learning_rate, then cosine decay to min_learning_rate at max_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_learning_rate + 0.5 * (1 + math.cos(math.pi * progress)) * (
        config.learning_rate - config.min_learning_rate)


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
    return PoemData(vocab, lm_data.encode_poems(train_poems, vocab), lm_data.encode_poems(val_poems, vocab))


def make_optimizer(model, config: TrainConfig, device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on LayerNorm weights or biases)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95), fused=device.type == "cuda")


@torch.no_grad()
def evaluate(model, data: torch.Tensor, config: TrainConfig, device) -> float:
    """Mean cross-entropy (nats per character) over the first eval_windows held-out windows.

    Always in float32, even where training autocasts to bf16 or float16: evaluation costs
    little, and a loss that a GPU reports then agrees with a CPU's to rounding error.
    """
    model.eval()
    total, count = 0.0, 0
    for x, y in lm_data.consecutive_batches(data, config.batch_size, config.block_size, config.eval_windows):
        x, y = x.to(device), y.to(device)
        loss = model(x, y)[1]
        total += loss.item() * y.numel()
        count += y.numel()
    model.train()
    return total / count


def train(config: TrainConfig | str, out_dir=None, resume: bool = False, device=None, progress: bool | None = None,
          log_every: int = 0, log=print):
    """Train a GPT with `config`; return (model, vocab, history).

    history: {"step": [...], "train_loss": [...], "val_loss": [...], "tokens_per_second": float, ...}.
    With out_dir, checkpoints go to out_dir/checkpoint.pt; resume=True continues from it.
    """
    if isinstance(config, str):
        config = named_config(config)
    device = get_device() if device is None else torch.device(device)
    set_seed(config.seed)
    data = load_data(config)
    model = GPT(config.model_config()).to(device)
    optimizer = make_optimizer(model, config, device)
    scaler = grad_scaler(device)        # enabled only for float16 training (GPUs without bf16)
    batches = torch.Generator().manual_seed(config.seed)
    history = {"step": [], "train_loss": [], "val_loss": []}
    step = 0
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None

    if resume:
        if checkpoint is None or not checkpoint.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}; start without --resume")
        saved = load_checkpoint(checkpoint, model, optimizer, map_location=device)
        if saved["train_config"] != dataclasses.asdict(config):
            raise CheckpointError(f"{checkpoint} was written with another configuration: "
                                  f"{saved['train_config']}; resume with the same --config")
        step, history = saved["step"], saved["history"]
        batches.set_state(saved["batch_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        if scaler.is_enabled() and saved.get("grad_scaler"):
            scaler.load_state_dict(saved["grad_scaler"])
        log(f"resumed from {checkpoint} at step {step}")

    compiled = torch.compile(model) if config.compile and device.type == "cuda" else model
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=config.max_steps, initial=step, unit="step", dynamic_ncols=True)

    model.train()
    tokens, start = 0, time.perf_counter()
    train_loss = float("nan")
    while step < config.max_steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        x, y = lm_data.random_batch(data.train, config.batch_size, config.block_size, batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device):
            _, loss = compiled(x, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()           # without float16 the scaler passes everything through
        scaler.unscale_(optimizer)              # true gradients, before clipping them
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)                  # skipped if a float16 gradient overflowed
        scaler.update()
        step += 1
        tokens += y.numel()
        train_loss = loss.item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}")
        if log_every and step % log_every == 0:
            log(f"step {step} train loss {train_loss:.4f}")
        if step % config.eval_every == 0 or step == config.max_steps:
            val_loss = evaluate(compiled, data.val, config, device)
            history["step"].append(step)
            history["train_loss"].append(train_loss)
            history["val_loss"].append(val_loss)
            if bar is not None:
                bar.write(f"step {step}: train loss {train_loss:.4f}, validation loss {val_loss:.4f}")
        if checkpoint is not None and (step % config.checkpoint_every == 0 or step == config.max_steps):
            save_checkpoint(checkpoint, model, optimizer, step, train_config=dataclasses.asdict(config),
                            history=history, vocab=data.vocab.chars, batch_rng=batches.get_state(),
                            torch_rng=torch.get_rng_state(),
                            cuda_rng=torch.cuda.get_rng_state() if device.type == "cuda" else None,
                            grad_scaler=scaler.state_dict() if scaler.is_enabled() else None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close()
    history["tokens_per_second"] = tokens / elapsed if elapsed > 0 else float("nan")
    history["seconds"] = elapsed
    return model, data.vocab, history


def named_config(name: str) -> TrainConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}: choose one of {', '.join(CONFIGS)}")
    return dataclasses.replace(CONFIGS[name])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train the book's mini-GPT on Tang poems.")
    parser.add_argument("--config", default="lesson", choices=list(CONFIGS))
    parser.add_argument("--out", type=Path, help="folder for checkpoint.pt (default: runs/CONFIG)")
    parser.add_argument("--resume", action="store_true", help="continue from the folder's checkpoint")
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--max-steps", type=int, help="override the config's number of steps")
    parser.add_argument("--log-every", type=int, default=0, help="print the training loss every N steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    config = named_config(args.config)
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    out = args.out or Path("runs") / args.config
    try:
        model, vocab, history = train(config, out, resume=args.resume, device=args.device,
                                      progress=False if args.no_progress else None, log_every=args.log_every,
                                      log=lambda s: print(s, flush=True))
    except (FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {"config": args.config, "steps": config.max_steps, "final_val_loss": history["val_loss"][-1],
               "tokens_per_second": history["tokens_per_second"], "seconds": history["seconds"],
               "parameters": model.num_parameters(), "checkpoint": str(out / "checkpoint.pt")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
