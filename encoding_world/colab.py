"""Google Colab's runtime, as the book's tests rehearse it.

Colab publishes what its runtime holds in the repository googlecolab/backend-info
(`pip-freeze.txt`, `os-info.txt`). `requirements-colab.txt` keeps, from such a
`pip-freeze.txt`, the version of every package the book needs there: the book's own
dependencies, everything they depend on, and the Jupyter kernel and pip that run a lesson.
`make colab-check` (tests/colab_check.py) installs exactly these into a fresh virtual
environment and runs every lesson in it as a Colab reader would.

    python -m encoding_world.colab pip-freeze.txt --os-info os-info.txt \\
        --source "googlecolab/backend-info at commit <sha>" --date 2026-08-19

rewrites requirements-colab.txt from a newer freeze. It must run in the book's own
environment (`make test` made it): the list of packages the book needs is walked from the
dependencies that environment has installed.
"""
import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from .data import REPO_ROOT

REQUIREMENTS = REPO_ROOT / "requirements-colab.txt"
# What runs a lesson besides the book's dependencies: the kernel, and the pip and
# setuptools that the launch cell's `pip install -e` uses.
RUNTIME_ROOTS = ["ipykernel", "pip", "setuptools"]


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


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    """Names of the distributions `dist` requires, without extras, markers evaluated."""
    from packaging.requirements import Requirement

    names = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.append(normalize(req.name))
    return names


def project_dependencies() -> list[str]:
    """The names in pyproject.toml's `dependencies` (the ranges readers install)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [normalize(Requirement(text).name) for text in project["dependencies"]]


def needed_packages(roots: list[str], colab: dict[str, str]) -> set[str]:
    """Every distribution the `roots` need in Colab, walked through the installed requirements.

    The walk reads this environment's (newer) versions, whose requirements can differ from
    those of Colab's versions. So below a package that Colab holds, only packages Colab
    also holds are followed (Colab's own version is installed with what it needs); below
    one that Colab lacks, everything is, since the launch cell installs it all.
    """
    needed, todo = set(), [normalize(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{name} is not installed here: run this in the book's environment "
                               "(`make test` creates .venv), where every dependency is installed") from None
        todo.extend(child for child in _requirement_names(dist) if child in colab or name not in colab)
    return needed


def render(colab: dict[str, str], needed: set[str], *, source: str, date: str, python: str,
           system: str) -> str:
    """The text of requirements-colab.txt."""
    held = sorted(n for n in needed if n in colab)
    lacking = sorted(n for n in needed if n not in colab)
    lines = [
        "# The versions Google Colab's runtime holds of every package the book needs: its",
        "# dependencies, what they depend on, and the kernel and pip that run a lesson.",
        f"# Source: {source}, pip-freeze.txt and os-info.txt, dated {date}.",
        f"# colab-python: {python}",
        f"# colab-system: {system}",
        "# Written by `python -m encoding_world.colab` from that pip-freeze.txt; `make colab-check`",
        "# installs these into a fresh environment and runs every lesson as a Colab reader would.",
        "# Colab's torch is the +cpu (or +cuXXX) build of PyTorch's index; PyPI's build of the",
        "# same release stands in for it.",
        f"# Not in Colab (the lesson's launch cell installs them): {', '.join(lacking) or 'none'}",
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
    args = parser.parse_args(argv)

    os_info = [l.strip() for l in args.os_info.read_text(encoding="utf-8").splitlines()
               if l.strip() and not l.startswith("#")]
    python = next((l.split()[1] for l in os_info if l.startswith("Python ")), None)
    if python is None:
        parser.error(f"{args.os_info} names no Python version (a line 'Python 3.x.y')")
    system = os_info[0]
    colab = parse_freeze(args.freeze.read_text(encoding="utf-8"))
    needed = needed_packages(project_dependencies() + RUNTIME_ROOTS, colab)
    args.output.write_text(render(colab, needed, source=args.source, date=args.date,
                                  python=python, system=system), encoding="utf-8")
    print(f"wrote {args.output} ({sum(n in colab for n in needed)} packages from Colab, "
          f"{sum(n not in colab for n in needed)} that Colab lacks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
