"""Recurrent language models against the mini-GPT, at the same parameter count and budget.

    python bench/rnn_lm.py                                  # the learning-rate sweep, then the long runs
    python bench/rnn_lm.py --sweep-steps 80 --steps 1500 --threads 1

Lesson 11 trains three character-level language models of the Tang poems on the CPU for a
short budget; this script does what the lesson has no time for:

1. a learning-rate sweep at the lesson's budget (`--sweep-steps` steps of 32 windows of 64
   characters), for each model, which chose the learning rates the lesson uses;
2. longer runs (`--steps`) of each model at the two best learning rates of the sweep (the
   best rate for a short run is often too high for a long one), with the validation loss every
   `--eval-every` steps, to see whether the order at the lesson's budget holds.

The three models have (almost) the same number of parameters, 0.78 M, and so the same
training FLOPs per character, about 6·N:

    mini-GPT  2 blocks × d_model 128  (lesson 12's "lesson" model)    777,856
    LSTM      1 layer  × 176                                        777,216
    RNN       1 layer  × 225 (Elman, tanh)                          776,700

Every run goes through the book's one training loop, `train.train_steps` (the cosine schedule
with warm-up of `train.cosine_lr`, AdamW from `train.make_optimizer`, clipping at 1, the same
seeded batches from `lm_data.random_batches`), exactly as lesson 11 and `python -m
encoding_world.train` do, and scores the same 256 held-out windows (`lm_data.consecutive_windows`)
with `lm_data.mean_loss`. Results go to bench/results/rnn_lm-<device><threads>.json (or --out).

bench/results/rnn_lm-cpu1.json (1 thread, 2026-12-04) was written by this script's first version,
which wrote the same loop out inline (same schedule, optimizer groups, batches and windows);
lesson 11's 80-step runs through train_steps repeat its sweep points to 0.001 nats.
"""
import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from encoding_world import lm_data, train  # noqa: E402
from encoding_world.gpt import GPT  # noqa: E402
from encoding_world.rnn import CharRNN, CharRNNConfig  # noqa: E402
from encoding_world.runtime import get_device, set_seed  # noqa: E402

MODELS = {"rnn": 225, "lstm": 176, "gpt": 128}   # the width that gives each about 0.78 M parameters
SWEEP = {"rnn": (1e-3, 3e-3, 1e-2), "lstm": (3e-3, 1e-2, 2e-2, 4e-2), "gpt": (3e-3, 6e-3, 1e-2)}


def build(name: str, config: train.TrainConfig):
    set_seed(config.seed)
    if name == "gpt":
        return GPT(config.model_config())
    return CharRNN(CharRNNConfig(config.vocab_size, d_model=MODELS[name], n_layer=1, cell=name))


def run(name: str, steps: int, lr: float, eval_every: int, data, device):
    """Lesson 12's recipe (the "lesson" config's data, batch, window, weight decay, clipping)
    for `steps` steps at peak learning rate `lr` (warm-up over a tenth of the steps, cosine down
    to lr / 10), evaluated every `eval_every` steps and at the end; returns the history."""
    config = train.CONFIGS["lesson"]
    model = build(name, config).to(device)
    optimizer = train.make_optimizer(model.parameters(), lr, config.weight_decay, device)
    batches = lm_data.random_batches(data.train, config.batch_size, config.block_size,
                                     torch.Generator().manual_seed(config.seed))
    validation = lm_data.consecutive_windows(data.val, config.block_size, config.eval_windows)
    lr_at = functools.partial(train.cosine_lr, peak=lr, floor=lr / 10, warmup=max(1, steps // 10), total=steps)
    history = {"step": [], "val_loss": [], "seconds": []}
    start = time.perf_counter()

    def on_step(step, loss):
        if step % eval_every == 0 or step == steps:
            history["step"].append(step)
            history["val_loss"].append(lm_data.mean_loss(model, validation))
            history["seconds"].append(time.perf_counter() - start)

    train.train_steps(model, optimizer, batches, steps, lr_at=lr_at, grad_clip=config.grad_clip, on_step=on_step)
    history["parameters"] = model.num_parameters()
    history["tokens_seen"] = steps * config.batch_size * config.block_size
    return history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep-steps", type=int, default=80, help="steps of the learning-rate sweep (the lesson's)")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the long runs (0: none)")
    parser.add_argument("--skip-sweep", action="store_true", help="reuse the sweep stored in the results file")
    parser.add_argument("--lr", action="append", default=[], metavar="MODEL=LR",
                        help="long runs of MODEL at LR only (e.g. --lr gpt=0.003), instead of the sweep's two best")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--only", action="append", choices=sorted(MODELS), help="these models only (repeatable)")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/rnn_lm-<device><threads>.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    data = train.load_data(train.CONFIGS["lesson"])
    out = args.out or Path(__file__).resolve().parent / "results" / f"rnn_lm-{device.type}{torch.get_num_threads()}.json"
    models = args.only or list(MODELS)
    results = {"device": f"{device}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "widths": MODELS,
               "sweep_steps": args.sweep_steps, "sweep": {}, "chosen_lr": {}, "long": {}}
    if args.skip_sweep:
        stored = json.loads(out.read_text(encoding="utf-8"))
        for key in ("sweep_steps", "sweep", "chosen_lr", "long"):
            results[key] = stored[key]
    for name in models:
        for lr in ([] if args.skip_sweep else SWEEP[name]):
            h = run(name, args.sweep_steps, lr, args.sweep_steps, data, device)
            results["sweep"].setdefault(name, {})[str(lr)] = h["val_loss"][-1]
            print(f"sweep {name} lr {lr:g}: {h['val_loss'][-1]:.4f} ({h['seconds'][-1]:.0f} s)", flush=True)
        results["chosen_lr"][name] = float(min(results["sweep"][name], key=results["sweep"][name].get))
        out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    given = dict(item.split("=") for item in args.lr)
    if args.steps:
        long = results["long"].setdefault(str(args.steps), {})   # {steps: {model: [runs]}}
        for name in models:
            best_two = sorted(results["sweep"][name], key=results["sweep"][name].get)[:2]
            for lr in ([given[name]] if name in given else best_two):
                h = run(name, args.steps, float(lr), args.eval_every, data, device)
                h["learning_rate"] = float(lr)
                long[name] = [r for r in long.get(name, []) if r["learning_rate"] != float(lr)] + [h]
                print(f"long {name} lr {float(lr):g}: {h['val_loss'][-1]:.4f} after {args.steps} steps "
                      f"({h['seconds'][-1]:.0f} s)", flush=True)
                out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
