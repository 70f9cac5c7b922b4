"""Run lessons top to bottom on a GPU, as a Colab GPU reader does: every assert must hold.

nbval and Jupyter are often missing on a GPU machine, and what a lesson prints there differs
from the stored CPU outputs anyway; so this runs each lesson's code cells in order in one
namespace, in a process of its own (the device is the best available: CUDA first), and
reports the first failing cell. The lessons use no IPython magics, which keeps that exact.

    python tests/gpu_lessons.py                          # every lesson, bf16 where the GPU has it
    ENCODING_WORLD_AUTOCAST=fp16 python tests/gpu_lessons.py 11 15   # float16 + scaler, as on a T4
    python tests/gpu_lessons.py --timeout 300 --jobs 8

Lessons that import a package the machine lacks (jieba and gensim, on a bare GPU image) are
reported as failing at that import. Results: a table (lesson, passed, seconds, first error),
and each lesson's log in --logs.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cells(path: Path) -> int:
    """Execute the notebook's code cells in order; 0 if all ran, 1 at the first error."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    os.chdir(path.parent)                      # as Jupyter does: the notebook's folder
    namespace = {"__name__": "__main__"}
    start = time.perf_counter()
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        try:
            exec(compile("".join(cell["source"]), f"{path.name}:cell{index}", "exec"), namespace)
        except Exception:
            traceback.print_exc()
            print(f"FAILED at cell {index} (id {cell.get('id')}) after {time.perf_counter() - start:.0f} s")
            return 1
    print(f"PASSED in {time.perf_counter() - start:.0f} s")
    return 0


def run_lesson(path: Path, timeout: int, logs: Path) -> dict:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    log = logs / f"{path.stem}.log"
    start = time.perf_counter()
    try:
        with log.open("w", encoding="utf-8") as out:
            code = subprocess.run([sys.executable, __file__, "--cells", str(path)], stdout=out,
                                  stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        code = None
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    error = "" if code == 0 else f"timed out after {timeout} s" if code is None else next(
        (line for line in reversed(lines) if "Error" in line or "assert" in line.lower()), lines[-1] if lines else "")
    return {"lesson": path.stem, "passed": code == 0, "seconds": round(time.perf_counter() - start), "error": error[:160]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers (default: all)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per lesson")
    parser.add_argument("--jobs", type=int, default=4, help="lessons at once (they share the GPU)")
    parser.add_argument("--logs", type=Path, default=ROOT / "_build" / "gpu_lessons")
    parser.add_argument("--cells", type=Path, help=argparse.SUPPRESS)     # one lesson, in this process
    args = parser.parse_args(argv)
    if args.cells:
        return run_cells(args.cells.resolve())
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.lessons:
        paths = [p for p in paths if p.name[:2] in {n.zfill(2) for n in args.lessons}]
    args.logs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda p: run_lesson(p, args.timeout, args.logs), paths))
    print("| lesson | passed | seconds | first error |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['lesson']} | {'yes' if r['passed'] else 'NO'} | {r['seconds']} | {r['error']} |")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
