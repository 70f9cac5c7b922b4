"""Google Colab's runtime, as the book's tests rehearse it.

Colab publishes what its runtime holds in the repository googlecolab/backend-info
(`pip-freeze.txt`, `os-info.txt`). `requirements-colab.txt` keeps, from such a
`pip-freeze.txt`, the version of every package the book needs there: the book's own
dependencies, everything they depend on, and the Jupyter kernel and pip that run a lesson.
`make colab-check` (tests/colab_check.py) installs exactly these into a fresh virtual
environment and runs every lesson in it as a Colab reader would.

    python book/colab.py pip-freeze.txt --os-info os-info.txt \\
        --source "googlecolab/backend-info at commit <sha>" --date 2026-08-19

rewrites requirements-colab.txt from a newer freeze: pip resolves the book's dependencies
(a dry run, reading the package index) with every package Colab holds held to Colab's
version, and the file pins everything that resolution installs that Colab holds.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

REQUIREMENTS = REPO_ROOT / "requirements-colab.txt"
# What runs a lesson besides the book's dependencies: the kernel, the pip and setuptools
# that the launch cell's `pip install -e` uses, and pytest, which lesson 14 runs on the
# book's own tests (Colab has it; the book does not require it).
RUNTIME_ROOTS = ["ipykernel", "pip", "setuptools", "pytest"]
# The CUDA runtime that PyPI's torch wheel for Linux requires. Colab's CPU runtime has the
# +cpu build of torch, which needs none of it; the rehearsal installs PyPI's build, and with
# it these, whatever versions Colab holds of them for other libraries.
CUDA_RUNTIME = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def normalize(name: str) -> str:
    """A distribution's name as pip compares names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_freeze(text: str) -> dict[str, str]:
    """{normalized name: version} from the text of a `pip freeze`.

    Colab installs torch and its siblings from PyTorch's own index, so their lines read
    `torch @ https://…/torch-2.11.0%2Bcpu-cp313-….whl`; the version is taken from the file
    name (here 2.11.0+cpu). Other direct references (git, local files) carry no version
    and are left out.
    """
    versions = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        if "==" in line:
            name, version = line.split("==", 1)
            versions[normalize(name)] = version.strip()
            continue
        match = re.match(r"([A-Za-z0-9][\w.-]*)\s*@\s*\S*/([^/]+)\.whl", line)
        if match:
            name, filename = match.groups()
            version = filename.split("-")[1].replace("%2B", "+")
            versions[normalize(name)] = version
    return versions


def project_dependencies() -> list[str]:
    """The names in pyproject.toml's `dependencies` (the ranges readers install)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [normalize(Requirement(text).name) for text in project["dependencies"]]


def resolve(roots: list[str], colab: dict[str, str], python: str = sys.executable) -> dict[str, str]:
    """{name: version} of everything pip installs for `roots` into an empty environment when
    every package that Colab holds is held to Colab's version (a dry run: nothing is
    installed, but pip reads the packages' metadata from the index)."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "colab-constraints.txt"
        constraints.write_text("".join(f"{name}=={version.split('+', 1)[0]}\n"
                                       for name, version in sorted(colab.items())
                                       if not CUDA_RUNTIME.match(name)), encoding="utf-8")
        report = Path(tmp) / "report.json"
        result = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                                 "--report", str(report), "-c", str(constraints), *roots],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"pip could not resolve {roots} with Colab's versions:\n{result.stderr[-3000:]}")
        install = json.loads(report.read_text(encoding="utf-8"))["install"]
    return {normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in install}


def render(colab: dict[str, str], needed: dict[str, str], *, source: str, date: str, python: str,
           system: str) -> str:
    """The text of requirements-colab.txt, from Colab's versions and the resolved `needed`."""
    needed = {n: v for n, v in needed.items() if not CUDA_RUNTIME.match(n)}
    held = sorted(n for n in needed if n in colab)
    lacking = [f"{n} {needed[n]}" for n in sorted(needed) if n not in colab]
    lines = [
        "# The versions Google Colab's runtime holds of every package the book needs: its",
        "# dependencies, what they depend on, and the kernel and pip that run a lesson.",
        f"# Source: {source}, pip-freeze.txt and os-info.txt, dated {date}.",
        f"# colab-python: {python}",
        f"# colab-system: {system}",
        "# Written by `python book/colab.py` from that pip-freeze.txt; `make colab-check`",
        "# installs these into a fresh environment and runs every lesson as a Colab reader would.",
        "# Colab's torch is the +cpu (or +cuXXX) build of PyTorch's index; PyPI's build of the",
        "# same release stands in for it.",
        "# Not in Colab, so installed from PyPI as resolved (the launch cell installs those that",
        f"# the book requires): {', '.join(lacking) or 'none'}",
    ]
    for name in held:
        version = colab[name].split("+", 1)[0]
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def read_requirements(path: Path = REQUIREMENTS) -> tuple[dict[str, str], dict[str, str]]:
    """({name: version} pins, {header key: value}) of requirements-colab.txt."""
    pins, header = {}, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#\s*(colab-[\w-]+):\s*(.*)", line)
        if match:
            header[match.group(1)] = match.group(2).strip()
        elif line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[normalize(name)] = version.strip()
    return pins, header


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite requirements-colab.txt from Colab's pip-freeze.txt.")
    parser.add_argument("freeze", type=Path, help="pip-freeze.txt of googlecolab/backend-info")
    parser.add_argument("--os-info", type=Path, required=True, help="os-info.txt of the same commit")
    parser.add_argument("--source", required=True, help='e.g. "googlecolab/backend-info at commit a724079"')
    parser.add_argument("--date", required=True, help="the date of that commit, YYYY-MM-DD")
    parser.add_argument("--output", type=Path, default=REQUIREMENTS)
    parser.add_argument("--python", default=sys.executable,
                        help="the Python whose pip resolves the dependencies (Colab's version if you have it)")
    args = parser.parse_args(argv)

    os_info = [line.strip() for line in args.os_info.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")]
    python = next((line.split()[1] for line in os_info if line.startswith("Python ")), None)
    if python is None:
        parser.error(f"{args.os_info} names no Python version (a line 'Python 3.x.y')")
    system = os_info[0]
    colab = parse_freeze(args.freeze.read_text(encoding="utf-8"))
    needed = resolve(project_dependencies() + RUNTIME_ROOTS, colab, args.python)
    args.output.write_text(render(colab, needed, source=args.source, date=args.date,
                                  python=python, system=system), encoding="utf-8")
    lacking = sorted(n for n in needed if n not in colab and not CUDA_RUNTIME.match(n))
    print(f"wrote {args.output}: {sum(n in colab for n in needed)} packages at Colab's versions; "
          f"not in Colab: {', '.join(lacking) or 'none'} (and the CUDA runtime of PyPI's torch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
