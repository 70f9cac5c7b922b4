"""Run the lessons under CPU profiles that change the floating-point kernels (`make test-matrix`).

A reader's laptop differs from the machine that stored a lesson's outputs in the kernels
its libraries pick: PyTorch's vectorised operators (ATen's dispatch), its matrix products
(MKL on x86, oneDNN for some operators), NumPy's and SciPy's OpenBLAS (which gensim and
scikit-learn use), and the number of threads a reduction is split over. Each of these can be
switched on one machine by an environment variable, so one machine can stand in for many.

    python tests/matrix.py                      # every profile, every lesson (strict nbval)
    python tests/matrix.py --profiles ci        # the two profiles CI runs
    python tests/matrix.py --profiles reduced   # bf16 and float16 autocast on the CPU (asserts only)
    python tests/matrix.py --profiles threads-1,aten-default notebooks/08_attention.ipynb
    python tests/matrix.py --list               # the profiles and what each sets

Every profile runs `pytest --nbval` in a fresh process with its variables set (the lessons'
kernels inherit them); the two reduced-precision profiles run `pytest --nbval-lax`. The table (profile, passed, failed, seconds, failing cells) is printed
and written to _build/matrix/<profiles>.md and .json; tests/README.md keeps the last full run.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _threads(n: int) -> dict:
    return {name: str(n) for name in THREADS}


# name -> (environment, what it stands for). "default" is the machine as it is.
PROFILES = {
    "default": ({}, "this machine as it is: the widest kernels it has, 2 threads"),
    "aten-default": ({"ATEN_CPU_CAPABILITY": "default"}, "ATen without AVX: an old or non-x86 CPU's elementwise ops and reductions"),
    "aten-avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, "ATen's AVX2 kernels: most laptops of the last ten years"),
    "mkl-avx2": ({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "MKL's AVX2 matrix products (x86 without AVX-512)"),
    "mkl-sse42": ({"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, "MKL's SSE4.2 matrix products (older x86)"),
    "onednn-avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "oneDNN limited to AVX2"),
    "openblas-haswell": ({"OPENBLAS_CORETYPE": "Haswell"}, "OpenBLAS (NumPy, SciPy, gensim) with AVX2 kernels"),
    "openblas-sandybridge": ({"OPENBLAS_CORETYPE": "SandyBridge"}, "OpenBLAS with AVX kernels (x86 of 2011-2013)"),
    "threads-1": (_threads(1), "one thread"),
    "threads-4": (_threads(4), "four threads"),
    # Everything another common laptop changes at once: an AVX2 CPU with one thread.
    "laptop-avx2-1t": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                        "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell", **_threads(1)},
                       "an AVX2 laptop, one thread: ATen, MKL, oneDNN and OpenBLAS all at AVX2"),
    # A GPU's reduced precision rehearsed on the CPU: every autocast region runs in bf16 (an
    # A100/H100) or float16 with a gradient scaler (a T4). Outputs differ, so these run in
    # nbval's lax mode: a lesson passes when it runs to the end and every assert holds.
    "autocast-bf16": ({"ENCODING_WORLD_AUTOCAST": "bf16"}, "a GPU with bf16 (A100, H100), rehearsed on the CPU: asserts only"),
    "autocast-fp16": ({"ENCODING_WORLD_AUTOCAST": "fp16"}, "a GPU without bf16 (T4), rehearsed on the CPU: asserts only"),
}
LAX = {"autocast-bf16", "autocast-fp16"}
SWITCHES = {"ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE",
            "ENCODING_WORLD_AUTOCAST", *THREADS}

# CI runs the default profile (`make test`) and this one, the most different from it.
CI_EXTRA = "laptop-avx2-1t"
GROUPS = {"ci": ["default", CI_EXTRA], "all": list(PROFILES), "cpu": [n for n in PROFILES if n not in LAX],
          "reduced": sorted(LAX)}


def run_profile(name: str, targets: list[str], junit_dir: Path) -> dict:
    env_vars, _ = PROFILES[name]
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env.update(env_vars)
    env.setdefault("ENCODING_WORLD_DEVICE", "cpu")
    junit = junit_dir / f"{name}-{os.getpid()}.xml"     # several runs may share the folder
    start = time.perf_counter()
    mode = "--nbval-lax" if name in LAX else "--nbval"
    proc = subprocess.run([sys.executable, "-m", "pytest", mode, "-q", "-p", "no:randomly",
                           f"--junitxml={junit}", *targets],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    failing = []
    passed = failed = 0
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                failing.append(f"{Path(case.get('classname', '')).name}::{case.get('name')}")
            elif case.find("skipped") is None:
                passed += 1
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not failed):
        failing.append(f"pytest exited with {proc.returncode}: {proc.stdout[-500:]}")
    return {"profile": name, "env": env_vars, "passed": passed, "failed": failed,
            "seconds": round(seconds, 1), "failing": failing}


def table(rows: list[dict]) -> str:
    lines = ["| profile | sets | passed | failed | seconds | failing cells |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        sets = " ".join(f"`{k}={v}`" for k, v in r["env"].items()) or "nothing"
        failing = ", ".join(re.sub(r"^notebooks\.", "", f) for f in r["failing"]) or ""
        lines.append(f"| {r['profile']} | {sets} | {r['passed']} | {r['failed']} | {r['seconds']:.0f} | {failing} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="notebooks or folders (default: notebooks/)")
    parser.add_argument("--profiles", default="all", help="comma-separated names, or 'ci' or 'all'")
    parser.add_argument("--list", action="store_true", help="list the profiles and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (env, what) in PROFILES.items():
            print(f"{name:18} {what}\n{'':18} {' '.join(f'{k}={v}' for k, v in env.items()) or '(nothing set)'}")
        return 0
    names = GROUPS.get(args.profiles) or args.profiles.split(",")
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        parser.error(f"unknown profile(s) {', '.join(unknown)}: choose from {', '.join(PROFILES)} (or 'ci', 'all')")
    targets = args.targets or ["notebooks"]
    out = ROOT / "_build" / "matrix"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        print(f"profile {name}: running {' '.join(targets)} ...", flush=True)
        rows.append(run_profile(name, targets, out))
        r = rows[-1]
        print(f"  {r['passed']} passed, {r['failed']} failed, {r['seconds']:.0f} s"
              + (f"; failing: {', '.join(r['failing'])}" if r["failing"] else ""), flush=True)
    text = table(rows)
    print("\n" + text)
    stem = args.profiles.replace(",", "+") if len(args.profiles) < 80 else "custom"
    (out / f"{stem}.md").write_text(text + "\n", encoding="utf-8")
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 1 if any(r["failed"] or r["failing"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
