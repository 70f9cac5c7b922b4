"""Every link to the repository is derived from _config.yml and up to date."""
import json
import sys

import pytest

from encoding_world.data import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "book"))      # the book's tooling: book/links.py, book/colab.py
import links  # noqa: E402


def test_config_names_a_github_repository():
    url, branch = links.repository()
    assert url.startswith("https://github.com/") and branch


def test_derived_links_are_up_to_date():
    assert links.stale_files() == [], "run `python book/links.py` after editing _config.yml"


def test_colab_url_points_at_the_notebook_on_the_branch():
    url, branch = links.repository()
    owner_repo = url.removeprefix("https://github.com/")
    assert links.colab_url("01_one_hot_bow_tfidf.ipynb") == (
        f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/01_one_hot_bow_tfidf.ipynb")


def test_setup_cell_is_derived_from_config(tmp_path, monkeypatch):
    (tmp_path / "_config.yml").write_text(
        "repository:\n  url: https://github.com/someone/fork\n  branch: dev\n", encoding="utf-8")
    monkeypatch.setattr(links, "REPO_ROOT", tmp_path)
    source = links.setup_cell_source()
    assert '"https://github.com/someone/fork"' in source and '"dev"' in source
    assert "encoding-the-world/encoding-the-world" not in source


def test_a_bad_repository_url_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "_config.yml").write_text("repository:\n  url: git@github.com:a/b\n", encoding="utf-8")
    monkeypatch.setattr(links, "REPO_ROOT", tmp_path)
    try:
        links.repository()
    except ValueError as e:
        assert "https://github.com/OWNER/NAME" in str(e)
    else:
        raise AssertionError("a non-https URL was accepted")


def test_every_lesson_is_in_the_table_of_contents_and_vice_versa():
    files = links.toc_files()
    in_toc = {f for f in files if f.startswith("notebooks/")}
    on_disk = {f"notebooks/{p.stem}" for p in (REPO_ROOT / "notebooks").glob("*.ipynb")}
    assert in_toc == on_disk
    for f in files:
        assert any((REPO_ROOT / (f + ext)).exists() for ext in (".md", ".ipynb")), f


def test_colab_badges_in_readme_name_every_lesson():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for nb in (REPO_ROOT / "notebooks").glob("*.ipynb"):
        assert links.colab_url(nb.name) in readme
        json.loads(nb.read_text(encoding="utf-8"))


def test_pages_address_is_derived_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(links, "REPO_ROOT", tmp_path)
    for url, pages in [("https://github.com/Some-One/fork", "https://some-one.github.io/fork/"),
                       ("https://github.com/someone/someone.github.io", "https://someone.github.io/")]:
        (tmp_path / "_config.yml").write_text(f"repository:\n  url: {url}\n", encoding="utf-8")
        assert links.pages_url() == pages


def test_baseurl_is_written_into_config_keeping_its_comments():
    text = "title: T\n# about html\nhtml:\n  # a comment\n  favicon: f.png\nsphinx:\n  config: {}\n"
    once = links.config_with_baseurl(text, "https://a.github.io/b/")
    assert once == ("title: T\n# about html\nhtml:\n  baseurl: https://a.github.io/b/\n  # a comment\n"
                    "  favicon: f.png\nsphinx:\n  config: {}\n")
    again = links.config_with_baseurl(once, "https://c.github.io/d/")
    assert again == once.replace("https://a.github.io/b/", "https://c.github.io/d/")
    with pytest.raises(ValueError, match="html"):
        links.config_with_baseurl("title: T\n", "https://a.github.io/b/")


def test_readme_and_config_name_the_published_address():
    import yaml

    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["html"]["baseurl"] == links.pages_url()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert links.site_block() in readme and links.pages_url() in readme
