"""Training throughput and model FLOPs utilisation (MFU) of the mini-GPT's configs.

    python bench/train_throughput.py                    # every config that fits this device
    python bench/train_throughput.py --configs lesson --steps 30

For each config it times `--steps` optimizer steps of the training command's own loop
(`train.train_steps`) after `--warmup` untimed ones (which also absorb torch.compile's
compilation), on the device the training command would use, and reports tokens per second
and MFU:

    MFU = tokens/s × FLOPs per token / peak FLOP/s of the device
    FLOPs per token = 6·N + 6·n_layer·block_size·d_model   (GPT.flops_per_token)

Rows: each precision the device can train in (float32; float16 autocast with a gradient
scaler; bf16 autocast), and, with --processes N (default 2 on the CPU), the same steps under
DistributedDataParallel: N processes started by torchrun (gloo on the CPU, NCCL on GPUs), each
taking its share of the same global batch. On the CPU these rows are measured to report what
PyTorch does there, not to recommend them. A machine without a GPU writes "not measured" for
the GPU rows.

The peak is the vendor's dense bf16 figure for a known GPU; on a CPU, which has no such
published figure, it is measured here as the best float32 matrix-multiply rate, so CPU
MFU means "share of what this CPU's matmul reaches". Results are printed and written to
bench/results/train_throughput-<device>.json.
"""
import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from encoding_world import lm_data  # noqa: E402
from encoding_world.gpt import GPT  # noqa: E402
from encoding_world.runtime import AUTOCAST_ENV, autocast_dtype, get_device, set_seed  # noqa: E402
from encoding_world.train import CONFIGS, batch_split, cosine_lr, distributed_setup, make_optimizer, train_steps  # noqa: E402

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


def bench_config(name, device, steps, warmup, precision, rank=0, processes=1):
    """Time `steps` steps of train_steps for config `name` in `precision` (off, fp16, bf16 or
    auto: the device's choice), as process `rank` of `processes`."""
    config = CONFIGS[name]
    os.environ[AUTOCAST_ENV] = precision
    if precision == "auto":
        del os.environ[AUTOCAST_ENV]
    dtype = autocast_dtype(device)
    set_seed(0)
    # Random tokens are enough for timing: the cost of a step does not depend on the text.
    data = torch.randint(config.vocab_size, (200_000,))
    model = GPT(config.model_config()).to(device)
    optimizer = make_optimizer(model.parameters(), config.learning_rate, config.weight_decay, device)
    trained = torch.compile(model) if config.compile and device.type == "cuda" else model
    if processes > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None)
    per_process, accumulate = batch_split(config, processes)
    rows = slice(rank * per_process, (rank + 1) * per_process)
    batches = lm_data.random_batches(data, config.batch_size, config.block_size, torch.Generator().manual_seed(0), rows)
    lr_at = functools.partial(cosine_lr, peak=config.learning_rate, floor=config.min_learning_rate,
                              warmup=config.warmup_steps, total=config.max_steps)
    run = functools.partial(train_steps, trained, optimizer, batches, lr_at=lr_at, grad_clip=config.grad_clip,
                            accumulate=accumulate)
    run(warmup)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run(warmup + steps, start=warmup)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens_per_second = steps * config.batch_size * config.block_size / seconds
    return {"config": name, "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
            "gradient_scaler": dtype == torch.float16, "processes": processes,
            "threads_per_process": torch.get_num_threads(), "parameters": model.num_parameters(),
            "flops_per_token": model.flops_per_token(), "batch_size": config.batch_size,
            "block_size": config.block_size, "steps_timed": steps, "seconds_per_step": seconds / steps,
            "tokens_per_second": tokens_per_second, "compile": bool(config.compile and device.type == "cuda")}


def distributed_rows(args, names, device) -> list[dict]:
    """The rows of `names` under torchrun with args.processes processes (this file, run as a worker)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rows.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={args.processes}", __file__, "--worker", str(out), "--device", device.type,
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--configs", *names]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            return [{"config": name, "processes": args.processes, "status": "failed: " + result.stderr[-300:]}
                    for name in names]
        return json.loads(out.read_text())


def worker(args) -> None:
    rank, processes, device = distributed_setup(args.device)
    rows = [bench_config(name, device, args.steps, args.warmup, "auto", rank, processes) for name in args.configs]
    if rank == 0:
        Path(args.worker).write_text(json.dumps(rows))
    torch.distributed.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", help="configs to time (default: all but tiny; gpu only on a GPU)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device")
    parser.add_argument("--processes", type=int, default=2, help="processes of the DDP rows (0: none)")
    parser.add_argument("--out", type=Path, help="results file (default: results/train_throughput-<device>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)      # a torchrun process of the DDP rows
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    device = torch.device(args.device) if args.device else get_device()
    names = args.configs or [n for n in CONFIGS if n != "tiny" and (n != "gpu" or device.type == "cuda")]
    peak, peak_source = device_peak(device)
    results = []

    def report(row):
        results.append(row)
        if "tokens_per_second" not in row:
            print(f"{row['config']:>9}: {row.get('precision', '')} {row['processes']} process(es): {row['status']}")
            return
        row["mfu"] = row["tokens_per_second"] * row["flops_per_token"] / peak
        print(f"{row['config']:>9} {row['precision']:>8} x{row['processes']} ({row['threads_per_process']} thr): "
              f"{row['parameters'] / 1e6:6.2f} M params, {row['tokens_per_second']:>10,.0f} tokens/s, "
              f"{row['seconds_per_step'] * 1e3:8.1f} ms/step, MFU {row['mfu']:6.1%}", flush=True)

    precisions = ["off", "fp16", "bf16"]
    for name in names:
        for precision in precisions:
            report(bench_config(name, device, args.steps, args.warmup, precision))
    if args.processes > 1 and (device.type == "cpu" or torch.cuda.device_count() >= args.processes):
        for row in distributed_rows(args, names, device):
            report(row)
    if device.type != "cuda":
        for precision in ("bfloat16", "float16"):
            for processes in (1, 8):
                report({"config": "gpu", "precision": precision, "processes": processes,
                        "status": "not measured (no GPU on this machine)"})
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu{torch.get_num_threads()}"
    out = args.out or Path(__file__).resolve().parent / "results" / f"train_throughput-{label.replace(' ', '_')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"device": label, "load_average": os.getloadavg(), "peak_flops": peak,
                               "peak_source": peak_source,
                               "torch": torch.__version__, "steps": args.steps, "warmup": args.warmup,
                               "results": results}, indent=2) + "\n")
    print(f"peak {peak / 1e12:.2f} TFLOP/s ({peak_source}); wrote {out}")


if __name__ == "__main__":
    main()
