"""The built site, opened in a real browser (headless Chromium driven by Playwright).

The book is built once per session exactly as `make book` builds it (warnings are
errors); then every page is loaded over HTTP from localhost and checked as a reader would
see it. A screenshot of one lesson is saved in _build/screenshots/ for a person to look at.
Without Chromium the browser checks are skipped with a message saying how to install it.
"""
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from encoding_world.data import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "book"))      # the book's tooling: book/links.py, book/zh.py
import links  # noqa: E402
import zh  # noqa: E402

HTML = REPO_ROOT / "_build" / "html"
LESSONS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


PROSE_PAGES = [f for f in links.toc_files() if not f.startswith("notebooks/")]


def find_chromium():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def built_site():
    """Both editions, as `make book` builds them: English in _build/html, Chinese in zh/."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    logs = []
    for source in (REPO_ROOT, REPO_ROOT / "zh"):
        if source.name == "zh":
            zh.build()
        result = subprocess.run([str(jupyter_book), "build", str(source), "--all",
                                 "--warningiserror", "--keep-going"],
                                capture_output=True, text=True, cwd=REPO_ROOT)
        log = result.stdout + result.stderr
        assert result.returncode == 0, f"{source.name}: the book did not build cleanly:\n{log[-6000:]}"
        logs.append(log)
    shutil.rmtree(HTML / "zh", ignore_errors=True)
    shutil.copytree(REPO_ROOT / "zh" / "_build" / "html", HTML / "zh")
    assert (HTML / "index.html").exists() and (HTML / "zh" / "index.html").exists()
    return "\n".join(logs)


@pytest.fixture(scope="session")
def site_url(built_site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("browser test SKIPPED: Chromium is not installed "
                    "(`apt-get install chromium`; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def heading(page):
    """The page's title as the lesson's first cell writes it (MyST typesets ' as ’)."""
    return page.locator("h1").first.inner_text().strip().rstrip("#").strip().replace("\u2019", "'")


def open_page(browser, url):
    """Load a page; return it with the console errors and failed requests it produced."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
    page.goto(url, wait_until="networkidle")
    return page, problems


def test_book_builds_without_warnings(built_site):
    assert built_site.count("build succeeded") == 2          # the English and the Chinese edition
    assert not re.search(r"\bWARNING\b", built_site)


def test_home_page(browser, site_url):
    page, problems = open_page(browser, f"{site_url}/book/intro.html")
    assert "Encoding the World" in page.title()
    for lesson in LESSONS:
        assert page.locator(f'nav a[href*="{lesson.stem}.html"]').count() >= 1, lesson.stem
    assert page.locator('a[href*="glossary.html"]').count() >= 1
    assert problems == []
    index, problems = open_page(browser, f"{site_url}/index.html")
    assert index.url.endswith("book/intro.html") and problems == []


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_page(browser, site_url, lesson):
    nb = json.loads(lesson.read_text(encoding="utf-8"))
    title = links.lesson_title(lesson)
    page, problems = open_page(browser, f"{site_url}/notebooks/{lesson.stem}.html")
    assert problems == []
    assert heading(page) == title

    # Figures: every stored plot is shown, and each image has really loaded.
    stored_plots = sum("image/png" in out.get("data", {}) for c in nb["cells"]
                       if c["cell_type"] == "code" for out in c["outputs"])
    images = page.locator(".cell_output img")
    assert images.count() == stored_plots >= 1
    assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
               for i in range(images.count()))

    # Math: MathJax (served with the book) has typeset every formula the lesson writes.
    markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    if "$" in markdown:
        # Attached, not visible: the first formula may sit in a folded part of the page.
        page.wait_for_selector("mjx-container svg", state="attached", timeout=15_000)
        assert page.locator("mjx-container").count() >= 1
        assert page.locator("mjx-merror").count() == 0, "MathJax reported a formula it could not parse"

    # Launch button: opens this very notebook in Colab, from the main branch.
    colab = page.locator('a[href^="https://colab.research.google.com/"]')
    assert colab.count() >= 1
    assert colab.first.get_attribute("href") == links.colab_url(lesson.name)

    # Hidden exercise solutions are behind a toggle.
    assert page.locator(".tag_hide-input").count() >= 2

    if lesson == LESSONS[0]:
        shots = REPO_ROOT / "_build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"{lesson.stem}.png"), full_page=False)


def test_glossary_page(browser, site_url):
    page, problems = open_page(browser, f"{site_url}/book/glossary.html")
    assert problems == []
    terms = page.locator("dl.glossary dt")
    assert terms.count() >= 20
    # Every term links to the lesson that demonstrates it.
    for i in range(terms.count()):
        definition = terms.nth(i).locator("xpath=following-sibling::dd[1]")
        assert definition.locator('a[href*="notebooks/"]').count() >= 1, terms.nth(i).inner_text()


def test_every_lessons_colab_button_opens_it_from_main(built_site):
    """Read from the built HTML (no browser needed): the launch button of each lesson opens
    that notebook, on the main branch, of the repository named in _config.yml."""
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    owner_repo = config["repository"]["url"].removeprefix("https://github.com/").strip("/")
    assert config["repository"]["branch"] == "main"
    for lesson in LESSONS:
        page = (HTML / "notebooks" / f"{lesson.stem}.html").read_text(encoding="utf-8")
        found = set(re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', page))
        expected = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{lesson.name}"
        assert found == {expected}, f"{lesson.name}: Colab links {found}"


def test_every_internal_link_resolves(built_site):
    """Every relative link and image of every page names a file that the build produced."""
    broken = []
    for page in HTML.rglob("*.html"):
        if "_static" in page.parts or "genindex" in page.name or "search" in page.name:
            continue
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r'(?:href|src)="([^"#?]+)', text):
            if re.match(r"^[a-z]+:", target) or target.startswith("//"):
                continue
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.relative_to(HTML)} -> {target}")
    assert broken == []


@pytest.mark.parametrize("stem", PROSE_PAGES)
def test_prose_page(browser, site_url, stem):
    """The introduction, part openers and reference pages load cleanly, with their figures."""
    page, problems = open_page(browser, f"{site_url}/{stem}.html")
    assert problems == []
    assert page.locator("h1").count() >= 1
    images = page.locator("article img")
    assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
               for i in range(images.count()))
    if stem == "book/intro":
        assert page.locator('img[src$="learning_path.svg"]').count() == 1
    if stem == "book/references":
        entries = page.locator("div.citation")
        assert entries.count() >= 20
    if stem.startswith("book/part") or stem == "book/appendices":
        assert page.locator('article a[href*="notebooks/"]').count() >= 1


@pytest.mark.parametrize("query, lessons", [
    ("注意力", ["08_attention"]),
    ("掩码", ["07_masks", "08_attention"]),
    ("attention", ["08_attention"]),
], ids=["zh-attention", "zh-masks", "en-attention"])
def test_search_finds_the_lessons(browser, site_url, query, lessons):
    """A reader types a word into the search box and the lessons about it are among the hits.

    Chinese is written without spaces, so Sphinx's default index keeps 因果掩码 or 掩码注意力
    whole, and a search for 掩码 could not find lesson 7, which writes it only inside such
    words. With html_search_language: zh the index splits Chinese into words (jieba).
    """
    page, problems = open_page(browser, f"{site_url}/search.html")
    box = page.locator("input[name=q]:visible").first
    box.fill(query)
    box.press("Enter")  # the form reloads search.html?q=…, as a reader's typing does
    page.wait_for_function("/Search finished|did not match/.test("
                           "document.querySelector('#search-results .search-summary')?.innerText || '')",
                           timeout=30_000)
    hits = [page.locator("#search-results ul.search li a").nth(i).get_attribute("href")
            for i in range(page.locator("#search-results ul.search li a").count())]
    found = {re.sub(r"\.html.*$", "", h).rsplit("/", 1)[-1] for h in hits if "notebooks/" in h}
    assert set(lessons) <= found, f"searching {query!r} found {hits}"
    assert problems == []
    # The interface stays English: only the index speaks Chinese.
    assert page.locator("html").get_attribute("lang") == "en"


def test_every_page_names_its_published_address(built_site):
    """html.baseurl (written by `make links`) gives each page its canonical address on
    GitHub Pages, so search engines credit the published site rather than a copy."""
    for lesson in LESSONS:
        page = (HTML / "notebooks" / f"{lesson.stem}.html").read_text(encoding="utf-8")
        assert f'<link rel="canonical" href="{links.pages_url()}notebooks/{lesson.stem}.html" />' in page


# ----------------------------------------------------------------- the Chinese edition

def switch_target(page):
    link = page.locator("#language-switch")
    assert link.count() == 1, "no language switch on the page"
    return link.get_attribute("href")


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_chinese_lesson_page(browser, site_url, lesson):
    """The Chinese lesson: its title, every figure, the formulas, a Colab button that opens
    the Chinese notebook, and a switch to the same lesson in English (and back)."""
    chinese = REPO_ROOT / "zh" / "notebooks" / lesson.name
    page, problems = open_page(browser, f"{site_url}/zh/notebooks/{lesson.stem}.html")
    assert problems == []
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    title = links.lesson_title(chinese)
    assert re.search(r"[\u4e00-\u9fff]", title), f"untranslated title {title!r}"
    assert heading(page) == title
    nb = json.loads(chinese.read_text(encoding="utf-8"))
    stored_plots = sum("image/png" in out.get("data", {}) for c in nb["cells"]
                       if c["cell_type"] == "code" for out in c["outputs"])
    images = page.locator(".cell_output img")
    assert images.count() == stored_plots >= 1
    assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
               for i in range(images.count()))
    if any("$" in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"):
        page.wait_for_selector("mjx-container svg", state="attached", timeout=15_000)
        assert page.locator("mjx-merror").count() == 0
    colab = page.locator('a[href^="https://colab.research.google.com/"]')
    assert colab.first.get_attribute("href") == links.colab_url(lesson.name).replace(
        "/blob/main/notebooks/", "/blob/main/zh/notebooks/")
    assert switch_target(page) == f"{site_url}/notebooks/{lesson.stem}.html"
    english, problems = open_page(browser, switch_target(page))
    assert problems == [] and english.locator("html").get_attribute("lang") == "en"
    assert switch_target(english) == f"{site_url}/zh/notebooks/{lesson.stem}.html"
    if lesson == LESSONS[7]:                   # attention: prose, a figure and formulas
        shots = REPO_ROOT / "_build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"zh_{lesson.stem}.png"), full_page=False)


@pytest.mark.parametrize("stem", PROSE_PAGES)
def test_chinese_prose_page(browser, site_url, stem):
    page, problems = open_page(browser, f"{site_url}/zh/{stem}.html")
    assert problems == []
    assert re.match(r"[\u4e00-\u9fff]", heading(page)), f"untranslated page: {heading(page)!r}"   # 附录（Appendices）
    images = page.locator("article img")
    assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
               for i in range(images.count()))
    assert switch_target(page) == f"{site_url}/{stem}.html"
    english, problems = open_page(browser, switch_target(page))
    assert problems == [] and switch_target(english) == f"{site_url}/zh/{stem}.html"


def test_chinese_glossary_links_every_term_to_a_lesson(browser, site_url):
    page, problems = open_page(browser, f"{site_url}/zh/book/glossary.html")
    assert problems == []
    terms = page.locator("dl.glossary dt")
    english, _ = open_page(browser, f"{site_url}/book/glossary.html")
    assert terms.count() == english.locator("dl.glossary dt").count() >= 20    # every term, both names
    for i in range(terms.count()):
        definition = terms.nth(i).locator("xpath=following-sibling::dd[1]")
        assert re.search(r"[\u4e00-\u9fff]", definition.inner_text()), terms.nth(i).inner_text()
        assert definition.locator('a[href*="notebooks/"]').count() >= 1, terms.nth(i).inner_text()


def test_chinese_search_finds_the_lessons(browser, site_url):
    page, problems = open_page(browser, f"{site_url}/zh/search.html?q=%E6%B3%A8%E6%84%8F%E5%8A%9B")  # 注意力
    page.wait_for_function("/Search finished|did not match|搜索完成|没有任何/.test("
                           "document.querySelector('#search-results')?.innerText || '')", timeout=30_000)
    hits = [page.locator("#search-results ul.search li a").nth(i).get_attribute("href")
            for i in range(page.locator("#search-results ul.search li a").count())]
    assert any("08_attention" in h for h in hits), hits
    assert problems == []
