"""The book's front matter and references: the learning-path figure and the bibliography."""
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

from encoding_world import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def _learning_path():
    spec = importlib.util.spec_from_file_location("make_learning_path", REPO_ROOT / "book" / "make_learning_path.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_path_names_every_lesson_and_points_forward():
    path = _learning_path()
    numbers = [number for number, *_ in path.LESSONS]
    assert numbers == [int(nb.name[:2]) for nb in NOTEBOOKS]
    assert set(path.BUILDS_ON) == set(numbers)
    for lesson, earlier in path.BUILDS_ON.items():
        assert all(source < lesson for source in earlier), f"lesson {lesson} builds on a later lesson"
    # Every lesson after the first two builds on something, so the figure has no orphans.
    assert all(path.BUILDS_ON[n] for n in numbers if n > 2)


def test_learning_path_figure_is_the_scripts_output(tmp_path):
    fresh = tmp_path / "learning_path.svg"
    _learning_path().draw(fresh)
    stored = REPO_ROOT / "book" / "_static" / "learning_path.svg"
    assert fresh.read_bytes() == stored.read_bytes(), "run `python book/make_learning_path.py` and commit the SVG"
    assert "_static/learning_path.svg" in (REPO_ROOT / "book" / "intro.md").read_text(encoding="utf-8")


def _bib_keys():
    text = (REPO_ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    return re.findall(r"^@\w+\{([^,]+),", text, flags=re.M)


def _cited_keys():
    cited = {}
    sources = [(p, p.read_text(encoding="utf-8")) for p in (REPO_ROOT / "book").glob("*.md")]
    for nb in NOTEBOOKS:
        notebook = nbformat.read(nb, as_version=4)
        sources.append((nb, "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")))
    for path, text in sources:
        for group in CITE.findall(text):
            for key in group.split(","):
                cited.setdefault(key.strip(), set()).add(Path(path).name)
    return cited


def test_bibliography_keys_are_unique():
    keys = _bib_keys()
    assert len(keys) == len(set(keys))
    assert len(keys) >= 20


def test_every_citation_exists_and_every_entry_is_cited():
    keys, cited = set(_bib_keys()), _cited_keys()
    assert set(cited) - keys == set(), f"cited but not in book/references.bib: {sorted(set(cited) - keys)}"
    assert keys - set(cited) == set(), f"in book/references.bib but cited by no lesson: {sorted(keys - set(cited))}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_lesson_cites_its_sources(notebook):
    text = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "markdown")
    assert CITE.search(text), f"{notebook.name} cites nothing from book/references.bib"


# The terms of the source notes' own glossary (名词解释), each of which the book's glossary
# must explain under its Chinese name.
NOTES_GLOSSARY = ["模型", "大语言模型", "视觉语言模型", "预训练", "预训练模型", "微调", "迁移学习",
                  "无监督学习", "监督学习", "掩码", "反向传播", "前向传播", "张量", "梯度", "自动求导",
                  "链式法则", "深度学习框架", "偏见"]


def _glossary_entries():
    """{name: definition} for every English and Chinese name in book/glossary.md."""
    text = (REPO_ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    body = text.split(":::{glossary}", 1)[1].split("\n:::", 1)[0]
    entries = {}
    for block in body.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        names = [line for line in lines if not line.startswith(" ")]
        definition = " ".join(line.strip() for line in lines if line.startswith(" "))
        for name in names:
            entries[name] = definition
    return entries


def test_glossary_covers_the_notes_glossary():
    names = _glossary_entries()
    chinese = {name.split(",")[0].strip() for name in names}
    missing = [term for term in NOTES_GLOSSARY if term not in chinese]
    assert missing == [], f"terms of the notes' glossary missing from book/glossary.md: {missing}"


def test_every_glossary_entry_names_an_existing_lesson():
    stems = {nb.stem for nb in NOTEBOOKS}
    for name, definition in _glossary_entries().items():
        linked = set(re.findall(r"\{doc\}`\.\./notebooks/([^`]+)`", definition))
        assert linked and linked <= stems, f"{name}: links {linked}"
