"""Every link to the book's repository, derived from the one place that names it.

`_config.yml` (`repository.url`, `repository.branch`) is the only place the repository's
address is written by hand. This module derives from it the Colab set-up cell that opens
every lesson, the clone and Colab links in README.md, and the address where GitHub Pages
publishes the site (in README.md, and as `html.baseurl` in `_config.yml`).

    python book/links.py          # rewrite them after changing _config.yml
    python book/links.py --check  # fail if any is out of date (a test runs this)
"""
import argparse
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = REPO_ROOT / "notebooks"
CHECKOUT = "/content/encoding-the-world"
SETUP_MARKER = "# Colab set-up"
SETUP_TAGS = ["hide-input"]  # folded away on the book's pages; it matters only in Colab
README_START = "<!-- links: start (written by `python book/links.py`) -->"
README_END = "<!-- links: end -->"
SITE_START = "<!-- site: start (written by `python book/links.py`) -->"
SITE_END = "<!-- site: end -->"
PDF_NAME = "encoding-the-world.pdf"  # `make pdf`; deploy.yml publishes it beside the site


def repository() -> tuple[str, str]:
    """(url, branch) of the book's repository, read from _config.yml."""
    import yaml

    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo = config.get("repository") or {}
    url = (repo.get("url") or "").rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"_config.yml: repository.url must be https://github.com/OWNER/NAME, got {url!r}")
    return url, repo.get("branch", "main")


def colab_url(notebook: str) -> str:
    """The Colab address that opens `notebooks/<notebook>` from the repository's branch."""
    url, branch = repository()
    return f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}" \
           f"/blob/{branch}/notebooks/{notebook}"


def pages_url() -> str:
    """The address where GitHub Pages publishes the book built from the repository."""
    url, _ = repository()
    owner, name = url.removeprefix("https://github.com/").split("/")
    host = f"{owner.lower()}.github.io"
    # A repository named OWNER.github.io is served at the root of that host.
    return f"https://{host}/" if name.lower() == host else f"https://{host}/{name}/"


def setup_cell_source() -> str:
    """The first code cell of every lesson.

    In Colab it clones the book and installs it with pip, quietly (a reader's first sight of
    the book should be the lesson, not installer output), pinning Colab's own torch and
    numpy so that pip can only add what Colab lacks (gensim, and the book's package): if a
    future lower bound ever excluded Colab's torch or numpy, the install fails with pip's
    message instead of downloading a replacement.
    """
    url, branch = repository()
    return f'''{SETUP_MARKER}: in Google Colab, fetch the book's code and data and install what
# Colab lacks, keeping Colab's own torch and numpy. From a checkout this cell does nothing.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    if not os.path.isdir("{CHECKOUT}"):
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "{branch}",
                        "{url}", "{CHECKOUT}"], check=True)
        from importlib.metadata import version
        keep = [f"{{name}}=={{version(name)}}" for name in ("torch", "numpy")]
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "{CHECKOUT}", *keep], check=True)
    sys.path.insert(0, "{CHECKOUT}")
    os.chdir("{CHECKOUT}/notebooks")'''


def site_block() -> str:
    return "\n".join([SITE_START, f"The book is published at **<{pages_url()}>**, and as one PDF at "
                                   f"<{pages_url()}{PDF_NAME}>.", "",
                       f"中文版：**<{pages_url()}zh/>**。每一课的中文笔记本在 `zh/notebooks/`，"
                       "代码与输出和英文版完全相同，只有文字不同；每页右上角的“English / 中文”"
                       "按钮在两种语言之间切换同一页。", SITE_END])


def config_with_baseurl(text: str, baseurl: str) -> str:
    """The text of _config.yml with `html.baseurl` set to `baseurl`, comments and order kept."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.fullmatch(r"html:\s*(#.*)?", line)), None)
    if start is None:
        raise ValueError("_config.yml has no top-level `html:` section to hold `baseurl`")
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].strip() and not lines[i].startswith((" ", "#"))), len(lines))
    entry = f"  baseurl: {baseurl}"
    for i in range(start + 1, end):
        if re.match(r"\s+baseurl\s*:", lines[i]):
            lines[i] = entry
            break
    else:
        lines.insert(start + 1, entry)
    return "\n".join(lines) + "\n"


def _config_baseurl() -> str | None:
    import yaml

    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    return (config.get("html") or {}).get("baseurl")


def _replace_block(text: str, start: str, end: str, block: str, where: str) -> str:
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{where} lacks the markers {start!r} … {end!r}")
    return pattern.sub(lambda _: block, text)


def readme_block() -> str:
    url, _ = repository()
    lines = [README_START, "", "```bash", f"git clone {url}", f"cd {url.rsplit('/', 1)[1]}",
             "```", "", "| lesson | open in Colab |", "| --- | --- |"]
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        title = lesson_title(path)
        lines.append(f"| {title} | [{path.name}]({colab_url(path.name)}) |")
    lines += ["", README_END]
    return "\n".join(lines)


def toc_files() -> list[str]:
    """Every page of `_toc.yml`, root first, in reading order (paths without suffix)."""
    import yaml

    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", []))
    return files


def lesson_title(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise ValueError(f"{path.name} has no '# Title' heading in a markdown cell")


def _first_code_cell(nb: dict) -> dict:
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            return cell
    raise ValueError("notebook has no code cell")


def stale_files() -> list[Path]:
    """Files whose derived links differ from what _config.yml says they should be."""
    stale = []
    source = setup_cell_source()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cell = _first_code_cell(json.loads(path.read_text(encoding="utf-8")))
        if "".join(cell["source"]) != source or cell["metadata"].get("tags") != SETUP_TAGS:
            stale.append(path)
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    if readme_block() not in readme or site_block() not in readme:
        stale.append(REPO_ROOT / "README.md")
    if _config_baseurl() != pages_url():
        stale.append(REPO_ROOT / "_config.yml")
    return stale


def write_links() -> list[Path]:
    source = setup_cell_source()
    changed = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell = _first_code_cell(nb)
        if "".join(cell["source"]) == source and cell["metadata"].get("tags") == SETUP_TAGS:
            continue
        if not "".join(cell["source"]).startswith(SETUP_MARKER):
            raise ValueError(f"{path.name}: its first code cell is not the Colab set-up cell; "
                             f"insert a code cell starting with {SETUP_MARKER!r} first")
        cell["source"] = source.splitlines(keepends=True)
        cell["metadata"]["tags"] = list(SETUP_TAGS)
        path.write_text(json.dumps(nb, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        changed.append(path)
    readme_path = REPO_ROOT / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    new = _replace_block(readme, README_START, README_END, readme_block(), "README.md")
    new = _replace_block(new, SITE_START, SITE_END, site_block(), "README.md")
    if new != readme:
        readme_path.write_text(new, encoding="utf-8")
        changed.append(readme_path)
    config_path = REPO_ROOT / "_config.yml"
    if _config_baseurl() != pages_url():
        config = config_path.read_text(encoding="utf-8")
        config_path.write_text(config_with_baseurl(config, pages_url()), encoding="utf-8")
        changed.append(config_path)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Derive the book's links from _config.yml.")
    parser.add_argument("--check", action="store_true", help="report stale files, change nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"{path.relative_to(REPO_ROOT)}: links out of date; run `python book/links.py`")
        return 1 if stale else 0
    for path in write_links():
        print(f"rewrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
