"""Training throughput and model FLOPs utilisation (MFU) of the mini-GPT's configs.

    python bench/train_throughput.py                    # every config that fits this device
    python bench/train_throughput.py --configs lesson --steps 30

For each config it times `--steps` optimizer steps after `--warmup` untimed ones (which
also absorb torch.compile's compilation), on the device the training command would use,
and reports tokens per second and MFU:

    MFU = tokens/s × FLOPs per token / peak FLOP/s of the device
    FLOPs per token = 6·N + 6·n_layer·block_size·d_model   (GPT.flops_per_token)

The peak is the vendor's dense bf16 figure for a known GPU; on a CPU, which has no such
published figure, it is measured here as the best float32 matrix-multiply rate, so CPU
MFU means "share of what this CPU's matmul reaches". Results are printed and written to
bench/results/train_throughput-<device>.json.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from encoding_world import lm_data  # noqa: E402
from encoding_world.gpt import GPT  # noqa: E402
from encoding_world.runtime import get_device, set_seed  # noqa: E402
from encoding_world.train import CONFIGS, autocast, learning_rate, make_optimizer  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets.
GPU_PEAK_BF16 = {"H100 SXM": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H200": 989e12,
                 "A100": 312e12, "L4": 121e12, "RTX 4090": 165e12}


def device_peak(device) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_BF16.items():
            if all(part in name for part in key.split()):
                return peak, f"{name}: data-sheet dense bf16 peak"
        raise SystemExit(f"no bf16 peak known for {name}: add it to GPU_PEAK_BF16")
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
    return best, f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads: measured fp32 matmul"


def bench_config(name, device, steps, warmup):
    config = CONFIGS[name]
    set_seed(0)
    # Random tokens are enough for timing: the cost of a step does not depend on the text.
    data = torch.randint(config.vocab_size, (200_000,))
    model = GPT(config.model_config()).to(device)
    optimizer = make_optimizer(model, config, device)
    compiled = torch.compile(model) if config.compile and device.type == "cuda" else model
    generator = torch.Generator().manual_seed(0)

    def step(i):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, i)
        x, y = lm_data.random_batch(data, config.batch_size, config.block_size, generator)
        x, y = x.to(device), y.to(device)
        with autocast(device):
            loss = compiled(x, y)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens_per_second = steps * config.batch_size * config.block_size / seconds
    return {"config": name, "parameters": model.num_parameters(), "flops_per_token": model.flops_per_token(),
            "batch_size": config.batch_size, "block_size": config.block_size, "steps_timed": steps,
            "seconds_per_step": seconds / steps, "tokens_per_second": tokens_per_second,
            "compile": bool(config.compile and device.type == "cuda"),
            "bf16_autocast": device.type == "cuda"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", help="configs to time (default: all but tiny; gpu only on a GPU)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else get_device()
    names = args.configs or [n for n in CONFIGS if n != "tiny" and (n != "gpu" or device.type == "cuda")]
    peak, peak_source = device_peak(device)
    results = []
    for name in names:
        row = bench_config(name, device, args.steps, args.warmup)
        row["mfu"] = row["tokens_per_second"] * row["flops_per_token"] / peak
        results.append(row)
        print(f"{name:>9}: {row['parameters'] / 1e6:6.2f} M params, {row['tokens_per_second']:>10,.0f} tokens/s, "
              f"{row['seconds_per_step'] * 1e3:8.1f} ms/step, MFU {row['mfu']:6.1%}", flush=True)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu{torch.get_num_threads()}"
    out = Path(__file__).resolve().parent / "results" / f"train_throughput-{label.replace(' ', '_')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"device": label, "peak_flops": peak, "peak_source": peak_source,
                               "torch": torch.__version__, "results": results}, indent=2) + "\n")
    print(f"peak {peak / 1e12:.2f} TFLOP/s ({peak_source}); wrote {out}")


if __name__ == "__main__":
    main()
