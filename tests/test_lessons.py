"""Each lesson follows the book's rules (CURRICULUM.md), checked on its stored form.

`pytest --nbval` proves that the stored outputs are reproduced; these tests check the
shape of each lesson: title, Colab cell, stored outputs from one fresh run with no errors
or stderr, ignored outputs followed by an assert, a summary and checked exercises.
"""
import json
import re
import sys

import pytest

from encoding_world.data import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "book"))      # the book's tooling: book/links.py
import links  # noqa: E402

LESSONS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def source(cell):
    return "".join(cell["source"])


@pytest.fixture(params=LESSONS, ids=lambda p: p.stem)
def lesson(request):
    return json.loads(request.param.read_text(encoding="utf-8"))


def test_there_are_lessons():
    assert len(LESSONS) >= 4


def test_title_and_goals(lesson):
    first = source(lesson["cells"][0])
    assert lesson["cells"][0]["cell_type"] == "markdown"
    assert re.match(r"# \d+\. \S", first), "a lesson opens with '# N. Title'"
    assert "you will be able to" in first.lower()
    headings = [line for c in lesson["cells"] if c["cell_type"] == "markdown"
                for line in source(c).splitlines() if re.match(r"# \S", line)]
    assert len(headings) == 1, f"exactly one top-level heading, found {headings}"


def test_first_code_cell_is_the_colab_setup(lesson):
    code = [c for c in lesson["cells"] if c["cell_type"] == "code"]
    assert source(code[0]) == links.setup_cell_source()
    assert code[0]["outputs"] == []


def test_outputs_come_from_one_clean_run(lesson):
    code = [c for c in lesson["cells"] if c["cell_type"] == "code" and source(c).strip()]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    for c in code:
        for out in c["outputs"]:
            assert out["output_type"] != "error", source(c)[:80]
            assert not (out["output_type"] == "stream" and out["name"] == "stderr"), \
                f"stderr stored (a warning or progress bar?) in: {source(c)[:80]}"


def test_ignored_outputs_are_followed_by_an_assert(lesson):
    cells = lesson["cells"]
    for i, c in enumerate(cells):
        if c["cell_type"] == "code" and source(c).startswith("# NBVAL_IGNORE_OUTPUT"):
            following = [source(d) for d in cells[i + 1:] if d["cell_type"] == "code"]
            assert following and "assert" in following[0], \
                f"an ignored output must be followed by a cell asserting its claim: {source(c)[:80]}"


def test_lesson_has_asserts_and_a_plot(lesson):
    code = "\n".join(source(c) for c in lesson["cells"] if c["cell_type"] == "code")
    assert code.count("assert") >= 5
    assert any("image/png" in out.get("data", {}) for c in lesson["cells"] if c["cell_type"] == "code"
               for out in c["outputs"])


def test_summary_and_checked_exercises(lesson):
    cells = lesson["cells"]
    titles = [source(c) for c in cells if c["cell_type"] == "markdown"]
    assert any(t.startswith("## Summary") for t in titles)
    start = next(i for i, c in enumerate(cells) if source(c).startswith("## Exercises"))
    solutions = [c for c in cells[start:] if c["cell_type"] == "code"]
    assert 2 <= len(solutions) <= 4, "2 to 4 exercises, each with one solution cell"
    for c in solutions:
        assert "hide-input" in c["metadata"].get("tags", []), "solutions are hidden behind a toggle"
        assert "assert" in source(c), "each solution checks itself"
