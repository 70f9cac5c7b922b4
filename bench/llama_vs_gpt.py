"""The mini-GPT against its LLaMA-style twin, with the same budget, over several seeds (lesson 14).

    python bench/llama_vs_gpt.py                     # 300 and 150 steps, seeds 0-2: ~20 min on 2 idle cores
    python bench/llama_vs_gpt.py --steps 300 --seeds 0

Each run is lesson 14's training loop, which is `train.train`'s (lesson 14 checks that the two
give the same weights): lesson 12's `lesson` configuration (2 blocks, width 128, 4 heads, 3,000
characters, batches of 32 windows of 64 characters, AdamW, warm-up over a tenth of the steps and
a cosine decay, gradients clipped at 1), with `max_steps` and the seed changed, for three models:

  gpt            the book's GPT (learned positions, LayerNorm, GELU feed-forward)
  llama          llama.LlamaGPT, the twin (RoPE, RMSNorm, SwiGLU of width 352), 4 key/value heads
  llama-gqa2     the same with 2 key/value heads (grouped-query attention: half the KV cache)

The seed sets both the initial weights and the batches. Validation loss on the first 256
held-out windows, every fifth of the run. Results are printed and written to
bench/results/llama_vs_gpt-cpu<threads>.json.
"""
import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from encoding_world import llama, lm_data, runtime, train  # noqa: E402
from encoding_world.gpt import GPT  # noqa: E402

MODELS = {
    "gpt": GPT,
    "llama": lambda c: llama.LlamaGPT(llama.LlamaGPTConfig.from_gpt_config(c)),
    "llama-gqa2": lambda c: llama.LlamaGPT(llama.LlamaGPTConfig.from_gpt_config(c, n_kv_head=2)),
}


def train_model(build, config, data, device):
    """train.train's loop for any model with GPT's interface (lesson 14, section 6.2)."""
    runtime.set_seed(config.seed)
    model = build(config.model_config()).to(device)
    optimizer = train.make_optimizer(model, config, device)
    scaler = runtime.grad_scaler(device)
    batches = torch.Generator().manual_seed(config.seed)
    history = {"step": [], "val_loss": []}
    model.train()
    for step in range(config.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = train.learning_rate(config, step)
        x, y = lm_data.random_batch(data.train, config.batch_size, config.block_size, batches)
        x, y = x.to(device), y.to(device)
        with runtime.autocast(device):
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if (step + 1) % config.eval_every == 0 or step + 1 == config.max_steps:
            history["step"].append(step + 1)
            history["val_loss"].append(train.evaluate(model, data.val, config, device))
    return model, history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 150])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = runtime.get_device()
    base = train.CONFIGS["lesson"]
    data = train.load_data(base)
    runs = []
    for steps in args.steps:
        for seed in args.seeds:
            config = dataclasses.replace(base, max_steps=steps, warmup_steps=steps // 10, eval_every=steps // 5,
                                         seed=seed)
            for name in args.models:
                start = time.perf_counter()
                model, history = train_model(MODELS[name], config, data, device)
                run = {"model": name, "steps": steps, "seed": seed, "parameters": model.num_parameters(non_embedding=False),
                       "val_loss": history["val_loss"], "eval_steps": history["step"],
                       "seconds": time.perf_counter() - start}
                runs.append(run)
                print(json.dumps({k: run[k] for k in ("model", "steps", "seed", "val_loss")}), flush=True)
    summary = {}
    for steps in args.steps:
        for seed in args.seeds:
            final = {r["model"]: r["val_loss"][-1] for r in runs if r["steps"] == steps and r["seed"] == seed}
            summary[f"{steps} steps, seed {seed}"] = final
            print(f"{steps:>4} steps, seed {seed}: " + "  ".join(f"{m} {v:.4f}" for m, v in final.items()))
    out = ROOT / "bench" / "results" / f"llama_vs_gpt-{device.type}{args.threads}.json"
    out.write_text(json.dumps({"device": str(device), "threads": args.threads, "torch": torch.__version__,
                               "runs": runs, "final": summary}, indent=1) + "\n", encoding="utf-8")
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
