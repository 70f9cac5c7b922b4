"""Lesson 16's measurements over seeds: how much of what one run shows is chance?

    python bench/sft_seeds.py                 # seeds 0-3, about 6 minutes on 2 CPU cores
    python bench/sft_seeds.py --seeds 4 5

Each run executes notebooks/16_instruction_tuning.ipynb top to bottom in a fresh kernel
with every seed of the lesson replaced by `seed`: the global seed (`ew.set_seed`), the
random.Random that draws the held-out requests, the order of the training examples and the
facts taught, the draw of LoRA's A matrices, and the sampling generator. Seed 0 is the
lesson as stored. The lesson's asserts run too: a run whose assert fails is reported with
the cell that failed, and its figures are still collected (cells after a failure run on).

Figures (shares of 60 held-out requests or 32 facts; losses in nats per character): for
base, full fine-tuning, LoRA and full fine-tuning without the mask, the share of answers in
the requested form and containing the requested character, the held-out answer loss and the
plain-poem loss; P(问 | END); the fact-tuning and retrieval shares. Printed as a table and
written to bench/results/sft-seeds-cpu<threads>.json. The lesson's prose quotes the ranges.
"""
import argparse
import json
import os
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "16_instruction_tuning.ipynb"

# What each seed replaces in the lesson's code; every pattern must occur (else the lesson
# changed and this list must follow it).
SEEDED = ["ew.set_seed(0)", "random.Random(0)", "torch.manual_seed(0)",
          "def answer_requests(model, requests, seed=0)", "torch.Generator(device).manual_seed(0)"]

COLLECT = """
import json as _json
_figures = {
    "in_form": {k: float(v[0]) for k, v in rates.items()},
    "has_char": {k: float(v[1]) for k, v in rates.items()},
    "answer_loss": {k: v[0] for k, v in losses.items()},
    "poem_loss": {k: v[1] for k, v in losses.items()},
    "p_ask": p_ask,
    "facts": {**{k: float(v) for k, v in recalled.items()}, "made_up_from_taught": float(from_taught),
              "poem_loss_after_facts": facts_tang},
    "retrieval": {"right_line": float(hits), "reader_taught": float(read["taught"]),
                  "reader_not_taught": float(read["not taught"]), "follows_edit": float(follows_edit)},
}
print("FIGURES " + _json.dumps(_figures))
"""


def seeded_notebook(seed: int):
    nb = nbformat.read(LESSON, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    missing = [p for p in SEEDED if p not in code]
    if missing:
        raise SystemExit(f"{LESSON.name} no longer contains {missing}: update SEEDED in {__file__}")
    for cell in nb.cells:
        if cell.cell_type == "code":
            for pattern in SEEDED:
                cell.source = cell.source.replace(pattern, pattern.replace("0)", f"{seed})"))
    nb.cells.append(nbformat.v4.new_code_cell(COLLECT))
    return nb


def run(seed: int) -> dict:
    nb = seeded_notebook(seed)
    client = NotebookClient(nb, timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(LESSON.parent)}})
    failed = []
    start = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except Exception as error:       # an assert of the lesson failed: note it, go on
                failed.append(f"cell {index}: {str(error).strip().splitlines()[-1][:200]}")
    seconds = time.perf_counter() - start
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    figures = json.loads(printed.split("FIGURES ", 1)[1]) if "FIGURES " in printed else None
    return {"seed": seed, "seconds": round(seconds, 1), "failed_asserts": failed, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON results")
    args = parser.parse_args()
    os.environ.setdefault("ENCODING_WORLD_DEVICE", "cpu")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    runs = []
    for seed in args.seeds:
        runs.append(run(seed))
        r = runs[-1]
        print(f"seed {seed}: {r['seconds']:.0f} s, failed asserts: {r['failed_asserts'] or 'none'}", flush=True)
    rows = [("in the requested form", "in_form"), ("containing the character", "has_char"),
            ("held-out answer loss", "answer_loss"), ("plain-poem loss", "poem_loss")]
    print(f"\n{'':28s}{'model':16s}" + "".join(f"{'seed ' + str(r['seed']):>9s}" for r in runs))
    for label, key in rows:
        for model in ("base", "full", "LoRA", "full, no mask"):
            values = [r["figures"][key][model] if r["figures"] else float("nan") for r in runs]
            fmt = "{:9.0%}" if key in ("in_form", "has_char") else "{:9.3f}"
            print(f"{label:28s}{model:16s}" + "".join(fmt.format(v) for v in values))
    for group in ("facts", "retrieval"):
        for key in (runs[0]["figures"] or {}).get(group, {}):
            values = [r["figures"][group][key] if r["figures"] else float("nan") for r in runs]
            print(f"{group + ': ' + key:44s}" + "".join(f"{v:9.2f}" for v in values))
    threads = torch.get_num_threads()
    out = args.out or ROOT / "bench" / "results" / f"sft-seeds-cpu{threads}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"what": "lesson 16 over seeds (bench/sft_seeds.py)", "torch": torch.__version__,
                               "threads": threads, "runs": runs}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
