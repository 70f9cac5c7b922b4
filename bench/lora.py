"""Full fine-tuning versus LoRA: training step time and memory, and inference latency.

    python bench/lora.py                 # CPU (and CUDA too, when there is one)
    python bench/lora.py --steps 20 --batch-size 16

Training. The book's pretrained mini-GPT is trained on random 64-token windows either fully
(every parameter, AdamW) or with LoRA (lesson 15's adapter: rank and targets below, base
frozen). For each mode it reports the median time of `--steps` optimizer steps after
`--warmup` untimed ones (the modes take turns for `--rounds` runs each, and each keeps its
fastest run), and memory in two ways:

* exact bytes of what training keeps besides the activations: the parameters, the
  gradients of the trainable ones, and the AdamW state (exp_avg, exp_avg_sq, step), counted
  tensor by tensor;
* peak memory as measured. On CPU: the peak resident set size (`ru_maxrss`) of a fresh
  child process per mode, and its rise from loading the model to the end of training (the
  process's Python, PyTorch and data are in the first figure, not in the rise). On CUDA:
  `torch.cuda.max_memory_allocated` during training.

Inference. The forward latency (median of `--repeats`) of the base model, the model with
the adapter unmerged (an extra x·Aᵀ·Bᵀ per wrapped layer) and merged (W + ΔW: the base's
cost again), for a batch of one 64-character window and a batch of 16.

Results are printed and written to bench/results/lora-<device>.json (cpu<threads> or cuda).
"""
import argparse
import copy
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from encoding_world import lm_data  # noqa: E402
from encoding_world.lora import add_lora, lora_layers, lora_parameters, merge_lora  # noqa: E402
from encoding_world.pretrained import load_pretrained  # noqa: E402
from encoding_world.runtime import set_seed  # noqa: E402
from encoding_world.train import make_optimizer, train_steps  # noqa: E402
from encoding_world.training import optimizer_state_bytes, tensor_bytes  # noqa: E402

# Lesson 15's adapter.
TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "up", "down")
RANK, ALPHA = 2, 4.0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_trainable(model, mode):
    if mode == "full":
        return list(model.parameters())
    add_lora(model, TARGETS, r=RANK, alpha=ALPHA)
    return lora_parameters(model)


def bench_training(mode, device, steps, warmup, batch_size) -> dict:
    """Step time and memory of one mode (run in a fresh process on CPU)."""
    set_seed(0)
    model, _ = load_pretrained(device)
    # Random tokens are enough for timing (a step costs the same whatever the text), and
    # reading the corpus would leave its own, larger peak in ru_maxrss before training starts.
    data = torch.randint(model.config.vocab_size, (200_000,))
    params = make_trainable(model, mode)
    optimizer = make_optimizer(params, lr=1e-4, device=device)
    generator = torch.Generator().manual_seed(0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: kibibytes
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device)
    stamps = []

    def on_step(step, loss):          # the book's training loop calls this after each step
        sync(device)
        stamps.append(time.perf_counter())

    on_step(0, None)
    train_steps(model, optimizer, lm_data.random_batches(data, batch_size, model.config.block_size, generator),
                warmup + steps, on_step=on_step)
    times = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
    trainable = [p for p in model.parameters() if p.requires_grad]
    result = {
        "mode": mode,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "step_seconds_median": statistics.median(times),
        "tokens_per_second": batch_size * model.config.block_size / statistics.median(times),
        "parameter_bytes": tensor_bytes(model.parameters()),
        "gradient_bytes": tensor_bytes(p.grad for p in trainable if p.grad is not None),
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
    }
    result["exact_training_state_bytes"] = (result["parameter_bytes"] + result["gradient_bytes"]
                                            + result["optimizer_state_bytes"])
    if device.type == "cuda":
        result["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        result["cuda_peak_rise_bytes"] = torch.cuda.max_memory_allocated(device) - cuda_before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["cpu_peak_rss_bytes"] = peak
        result["cpu_peak_rss_rise_bytes"] = peak - rss_before
    return result


@torch.no_grad()
def bench_inference(device, repeats) -> dict:
    set_seed(0)
    base, _ = load_pretrained(device)
    unmerged = copy.deepcopy(base)
    add_lora(unmerged, TARGETS, r=RANK, alpha=ALPHA)
    for layer in lora_layers(unmerged).values():
        layer.lora_B.normal_(std=0.01)              # a trained-looking adapter (B ≠ 0)
    merged = copy.deepcopy(unmerged)
    merge_lora(merged)
    models = {"base": base, "lora_unmerged": unmerged, "lora_merged": merged}
    out = {}
    for batch in (1, 16):
        x = torch.randint(base.config.vocab_size, (batch, base.config.block_size), device=device)
        for model in models.values():
            model.eval()
            for _ in range(5):
                model(x)
        # Interleave the three models so that a busy machine slows them alike.
        samples = {name: [] for name in models}
        for _ in range(repeats):
            for name, model in models.items():
                sync(device)
                start = time.perf_counter()
                model(x)
                sync(device)
                samples[name].append(time.perf_counter() - start)
        for name, values in samples.items():
            out[f"{name}_batch{batch}_ms"] = 1e3 * statistics.median(values)
    return out


def child(mode, device_name, steps, warmup, batch_size):
    print(json.dumps(bench_training(mode, torch.device(device_name), steps, warmup, batch_size)))


def run_device(device, args) -> dict:
    # The modes take turns, `rounds` times each, and each keeps its fastest round: on a shared
    # machine that is the one least disturbed by other work.
    runs = {"full": [], "lora": []}
    for _ in range(args.rounds):
        for mode in runs:
            if device.type == "cpu":   # a fresh process per run, so ru_maxrss is that run's alone
                done = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(args.steps),
                                       "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)],
                                      check=True, capture_output=True, text=True)
                runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
            else:
                runs[mode].append(bench_training(mode, device, args.steps, args.warmup, args.batch_size))
    rows = []
    for results in runs.values():
        best = min(results, key=lambda row: row["step_seconds_median"])
        best["step_seconds_all_rounds"] = [row["step_seconds_median"] for row in results]
        rows.append(best)
    name = (f"{cpu_name()}, {torch.get_num_threads()} threads"
            if device.type == "cpu" else torch.cuda.get_device_name(device))
    return {"device": name, "torch": torch.__version__, "batch_size": args.batch_size, "steps": args.steps,
            "lora": {"targets": list(TARGETS), "r": RANK, "alpha": ALPHA},
            "training": rows, "inference": bench_inference(device, args.repeats)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="training runs per mode; the fastest is kept")
    parser.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, "cpu", args.steps, args.warmup, args.batch_size)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    for device in devices:
        result = run_device(device, args)
        tag = f"cpu{torch.get_num_threads()}" if device.type == "cpu" else "cuda"
        path = out_dir / f"lora-{tag}.json"
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\n{result['device']} (batch {args.batch_size} × 64 characters, {args.steps} timed steps)")
        for row in result["training"]:
            mib = 1 / 2 ** 20
            memory = (f"peak RSS {row['cpu_peak_rss_bytes'] * mib:.0f} MiB "
                      f"(rise {row['cpu_peak_rss_rise_bytes'] * mib:.1f})"
                      if "cpu_peak_rss_bytes" in row else
                      f"CUDA peak {row['cuda_peak_allocated_bytes'] * mib:.1f} MiB")
            print(f"  {row['mode']:>4}: {row['trainable_parameters']:>9,} trainable, "
                  f"{row['step_seconds_median'] * 1e3:7.1f} ms/step, params+grads+AdamW "
                  f"{row['exact_training_state_bytes'] * mib:.2f} MiB "
                  f"(AdamW {row['optimizer_state_bytes'] * mib:.3f} MiB), {memory}")
        for key, value in result["inference"].items():
            print(f"  {key}: {value:.2f}")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
