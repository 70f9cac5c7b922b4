"""Colab's versions (requirements-colab.txt), the ranges they bound, and the launch cell."""
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from encoding_world.data import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "book"))      # the book's tooling: book/links.py, book/colab.py
import colab  # noqa: E402
import links  # noqa: E402


def project_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {colab.normalize(Requirement(r).name): Requirement(r) for r in project["dependencies"]}


def ci_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[colab.normalize(name)] = version.strip()
    return pins


def lower_bound(req: Requirement) -> Version:
    bounds = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(bounds) == 1, f"{req}: give one lower bound (>=), the version a run has tested"
    return bounds[0]


def test_parse_freeze_reads_pins_and_pytorch_index_wheels():
    text = ("# a comment\nnumpy==2.1.3\nsmart_open==8.0.1\n"
            "torch @ https://download.pytorch.org/whl/cpu/torch-2.11.0%2Bcpu-cp313-cp313-manylinux_2_28_x86_64.whl\n"
            "google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz\n")
    assert colab.parse_freeze(text) == {"numpy": "2.1.3", "smart-open": "8.0.1", "torch": "2.11.0+cpu"}


def test_render_and_read_back(tmp_path):
    text = colab.render({"numpy": "2.1.3", "torch": "2.11.0+cpu"},
                        {"numpy": "2.1.3", "torch": "2.11.0", "gensim": "4.4.0", "nvidia-nccl-cu13": "2.28.9"},
                        source="googlecolab/backend-info at commit abc", date="2026-08-19",
                        python="3.13.15", system="Ubuntu 22.04.5 LTS")
    path = tmp_path / "requirements-colab.txt"
    path.write_text(text, encoding="utf-8")
    pins, header = colab.read_requirements(path)
    assert pins == {"numpy": "2.1.3", "torch": "2.11.0"}  # PyPI's build stands in for +cpu
    assert header["colab-python"] == "3.13.15"
    assert "# the book requires): gensim 4.4.0" in text


def test_requirements_colab_names_its_source_and_every_dependency():
    pins, header = colab.read_requirements()
    text = colab.REQUIREMENTS.read_text(encoding="utf-8")
    assert "googlecolab/backend-info at commit" in text and "dated 20" in text
    assert header["colab-python"].startswith("3.")
    lacking = next(line for line in text.splitlines() if line.startswith("# the book requires"))
    for name in project_requirements():
        assert name in pins or name in lacking, f"{name}: neither pinned from Colab nor listed as missing"
    for name in colab.RUNTIME_ROOTS:
        assert name in pins


def test_every_range_was_tested_at_both_ends():
    """The low end of each range is what `make colab-check` runs (Colab's version, or what the
    launch cell installs where Colab lacks the package); the high end is CI's pin."""
    pins, _ = colab.read_requirements()
    ci = ci_pins()
    for name, req in project_requirements().items():
        low = lower_bound(req)
        tested_low = pins.get(name, ci[name])
        assert low == Version(tested_low), (
            f"pyproject.toml: {req} — the lowest tested version is {tested_low} "
            f"({'Colab' if name in pins else 'CI, and the launch cell'}); make it the lower bound")
        assert req.specifier.contains(ci[name], prereleases=True), f"CI's {name}=={ci[name]} is outside {req}"


def test_the_package_names_every_folder_it_ships():
    """Every folder of encoding_world/ is named in pyproject's packages: an unnamed one makes
    each install print a long setuptools warning (the first output of every Colab lesson)."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {"encoding_world"} | {
        "encoding_world." + ".".join(p.relative_to(REPO_ROOT / "encoding_world").parts)
        for p in (REPO_ROOT / "encoding_world").rglob("*")
        if p.is_dir() and p.name != "__pycache__" and any(f.is_file() for f in p.iterdir())}
    assert set(config["packages"]) == folders
    assert config["package-data"]["encoding_world.fonts"]


@pytest.fixture
def colab_cell_effects(monkeypatch):
    """Run the launch cell as if in Colab, recording the commands it would run."""
    import os
    import subprocess
    import types

    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    monkeypatch.setattr(os.path, "isdir", lambda path: False)
    monkeypatch.setattr(os, "chdir", lambda path: calls.append(["chdir", path]))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(links.setup_cell_source(), "launch-cell", "exec"), {})
    return calls


def test_launch_cell_in_colab_clones_and_installs_keeping_torch_and_numpy(colab_cell_effects):
    url, branch = links.repository()
    clone, install, chdir = colab_cell_effects
    assert clone == ["git", "clone", "-q", "--depth", "1", "--branch", branch, url, links.CHECKOUT]
    assert install[1:6] == ["-m", "pip", "install", "-q", "-e"] and install[6] == links.CHECKOUT
    assert install[7:] == [f"torch=={metadata.version('torch')}", f"numpy=={metadata.version('numpy')}"]
    assert chdir == ["chdir", f"{links.CHECKOUT}/notebooks"]


def test_launch_cell_outside_colab_does_nothing(monkeypatch):
    import subprocess

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    exec(compile(links.setup_cell_source(), "launch-cell", "exec"), {})
