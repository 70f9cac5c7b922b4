"""The Chinese edition is complete, current, and the English lessons' code and outputs.

A Chinese lesson is generated (book/zh.py) from the English notebook and the translation of
its markdown cells, so proving it is proving identity: the same code cells with the same
stored outputs, which `pytest --nbval` checks on the English notebook. What remains to
check is the text: every cell and page translated from the English text as it is now
(fingerprints), every number the English prose quotes still there in Chinese, and the
links, citations, formulas and code the prose carries kept intact.
"""
import json
import re
import sys
from collections import Counter

import pytest

from encoding_world.data import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "book"))      # the book's tooling: book/zh.py
import zh  # noqa: E402

LESSONS = zh.lessons()
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")
# "3 million" is 300 万 in Chinese: a number with a scale word is checked by the reader, not here.
SCALED = re.compile(r"\d[\d,.]*\s+(?:thousand|million|billion|trillion)\b")
# Spans may run over a line break in the English; lines are joined before they are looked for.
KEPT = {"code": r"`[^`]+`", "math": r"\$[^$]+\$", "role": r"\{(?:doc|cite|numref|ref|eq)\}`[^`]+`"}
ROLE = re.compile(r"\{[a-z]+\}`[^`]*`")
TERM = re.compile(r"\{term\}`(?:[^`<]*<)?([^`<>]+)>?`")


def spans(text, kind):
    """The code spans, formulas or roles of a markdown text, as a multiset. Fenced blocks and
    display math count whole; inline spans may run over a line break; code spans are looked
    for outside roles ({term}`…` may show Chinese text)."""
    blocks = re.findall(r"```.*?```|\$\$.*?\$\$", text, re.S)
    rest = re.sub(r"\s*\n\s*", " ", re.sub(r"```.*?```|\$\$.*?\$\$", " ", text, flags=re.S))
    if kind == "code":
        fences = [re.sub(r"[ \t]*#.*$", "", b, flags=re.M) for b in blocks if b.startswith("```")]  # comments may be translated
        return Counter(fences) + Counter(re.findall(KEPT["code"], ROLE.sub("", rest)))
    if kind == "math":
        return Counter(b for b in blocks if b.startswith("$$")) + Counter(re.findall(KEPT["math"], rest))
    return Counter(re.findall(KEPT[kind], rest))


def numbers(text):
    return Counter(n.replace(",", "") for n in NUMBER.findall(SCALED.sub("", text)))
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_lesson_and_page_is_translated_from_the_current_english():
    assert zh.problems() == []


def translated_cells(lesson):
    blocks = zh.parse_translation(zh.translation_file(lesson).read_text(encoding="utf-8"), lesson.stem)
    english = {c["id"]: zh.source(c) for c in zh.markdown_cells(zh.read_notebook(lesson))}
    return [(cell_id, english[cell_id], text) for cell_id, (_, text) in blocks.items() if cell_id in english]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_chinese_lesson_is_the_english_code_and_outputs(lesson):
    english = zh.read_notebook(lesson)
    chinese = zh.read_notebook(REPO_ROOT / "zh" / "notebooks" / lesson.name)
    assert [c["id"] for c in chinese["cells"]] == [c["id"] for c in english["cells"]]
    for en, cn in zip(english["cells"], chinese["cells"]):
        if en["cell_type"] == "code":
            assert cn == en, f"code cell {en['id']} differs from the English lesson's"
        else:
            assert cn["cell_type"] == "markdown" and cn["metadata"] == en["metadata"]
    assert chinese["metadata"] == english["metadata"]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_chinese_prose_keeps_numbers_links_formulas_and_code(lesson):
    problems = []
    for cell_id, english, chinese in translated_cells(lesson):
        missing = numbers(english) - numbers(chinese)
        if missing:
            problems.append(f"cell {cell_id}: numbers of the English text missing: {sorted(missing)}")
        if set(TERM.findall(english)) - set(TERM.findall(chinese)):
            problems.append(f"cell {cell_id}: glossary links lost: {set(TERM.findall(english)) - set(TERM.findall(chinese))}")
        for kind in KEPT:
            lost = spans(english, kind) - spans(chinese, kind)
            if lost:
                problems.append(f"cell {cell_id}: {kind} changed or missing: {sorted(lost)[:4]}")
        letters = len(re.findall(r"[A-Za-z]", re.sub(r"`[^`]*`|\$[^$]*\$|\{[a-z]+\}`[^`]*`|\(http[^)]*\)", "", english)))
        if letters > 150 and len(CJK.findall(chinese)) < letters / 10:
            problems.append(f"cell {cell_id}: looks untranslated")
    assert problems == []


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_chinese_lesson_has_one_chinese_title_and_the_same_sections(lesson):
    cells = translated_cells(lesson)
    first = cells[0][2]
    assert re.match(r"# \d+\. .*" + CJK.pattern, first), first[:80]
    headings = lambda text: re.findall(r"^(#+) ", text, re.MULTILINE)
    for cell_id, english, chinese in cells:
        assert headings(chinese) == headings(english), f"cell {cell_id}: headings differ in level or number"


@pytest.mark.parametrize("page", zh.PAGES)
def test_chinese_page_keeps_links_citations_and_terms(page):
    english = (REPO_ROOT / "book" / f"{page}.md").read_text(encoding="utf-8")
    chinese = (REPO_ROOT / "zh" / "book" / f"{page}.md").read_text(encoding="utf-8")
    for kind in ("role", "math"):
        lost = Counter(re.findall(KEPT[kind], english)) - Counter(re.findall(KEPT[kind], chinese))
        assert not lost, f"{kind} changed or missing: {sorted(lost)[:4]}"
    if page == "glossary":
        # Same terms (the keys lessons link to with {term}), in the same order.
        term_lines = lambda text: re.findall(r"^(\S[^\n]*)\n(\S[^\n]*)\n  ", text, re.MULTILINE)
        assert term_lines(chinese) == term_lines(english)


def test_a_changed_english_cell_is_reported(tmp_path, monkeypatch):
    """The sync works: edit an English cell after translating it and `check` names it."""
    lesson = LESSONS[0]
    notebooks, translations = tmp_path / "notebooks", tmp_path / "zh" / "translations"
    notebooks.mkdir()
    translations.mkdir(parents=True)
    nb = zh.read_notebook(lesson)
    (translations / f"{lesson.stem}.md").write_text(zh.template(lesson), encoding="utf-8")
    target = zh.markdown_cells(nb)[1]
    target["source"] = ["A sentence added after the translation.\n"] + target["source"]
    (notebooks / lesson.name).write_text(json.dumps(nb), encoding="utf-8")
    monkeypatch.setattr(zh, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(zh, "TRANSLATIONS", translations)
    found = zh.lesson_problems(notebooks / lesson.name)
    assert len(found) == 1 and target["id"] in found[0] and "changed in English" in found[0]
