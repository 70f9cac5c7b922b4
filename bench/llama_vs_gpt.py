"""The mini-GPT against its LLaMA-style twin, with the same budget, over several seeds (lesson 14).

    python bench/llama_vs_gpt.py                          # lesson 14's budget, 150 steps, seeds 0-2
    python bench/llama_vs_gpt.py --steps 300 150 --seeds 0 1 2 --threads 2

Each run is the training command, `train.run`, on lesson 12's `lesson` configuration (2 blocks,
width 128, 4 heads, 3,000 characters, batches of 32 windows of 64 characters, AdamW, warm-up over
a tenth of the steps and a cosine decay, gradients clipped at 1), with `max_steps`, the seed and
the architecture changed (TrainConfig.arch and n_kv_head):

  gpt            the book's GPT (learned positions, LayerNorm, GELU feed-forward)
  llama          llama.LlamaGPT, the twin (RoPE, RMSNorm, SwiGLU of width 352), 4 key/value heads
  llama-gqa2     the same with 2 key/value heads (grouped-query attention: half the KV cache)

The seed sets both the initial weights and the batches. Validation loss on the first 256
held-out windows, every fifth of the run. Results are printed and written to
bench/results/llama_vs_gpt-<device><threads>.json.
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from encoding_world import runtime, train  # noqa: E402

MODELS = {"gpt": {"arch": "gpt"}, "llama": {"arch": "llama"}, "llama-gqa2": {"arch": "llama", "n_kv_head": 2}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[150])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = runtime.get_device()
    base = train.CONFIGS["lesson"]
    runs = []
    for steps in args.steps:
        for seed in args.seeds:
            for name in args.models:
                config = dataclasses.replace(base, max_steps=steps, warmup_steps=steps // 10, eval_every=steps // 5,
                                             seed=seed, **MODELS[name])
                model, _, history = train.run(config, device=device, progress=False)
                run = {"model": name, "steps": steps, "seed": seed,
                       "parameters": model.num_parameters(non_embedding=False),
                       "val_loss": history["val_loss"], "eval_steps": history["step"], "seconds": history["seconds"]}
                runs.append(run)
                print(json.dumps({k: run[k] for k in ("model", "steps", "seed", "val_loss", "seconds")}), flush=True)
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
