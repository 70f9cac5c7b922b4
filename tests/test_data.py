"""The data files are the ones data/README.md describes, byte for byte."""
import hashlib
import re

import pytest

import encoding_world as ew
from encoding_world import data

ROW = re.compile(r"^\| `(?P<path>[^`]+)` \|.*\| `(?P<sha>[0-9a-f]{64})` \|$")


def listed_files():
    text = (ew.REPO_ROOT / "data" / "README.md").read_text(encoding="utf-8")
    rows = [ROW.match(line) for line in text.splitlines()]
    return {m["path"]: m["sha"] for m in rows if m}


def test_readme_lists_every_data_file():
    listed = listed_files()
    on_disk = {f"data/{p.name}" for p in ew.DATA_DIR.iterdir()
               if p.is_file() and p.suffix not in {".py", ".md"}}
    assert on_disk, "data/ holds no data files"
    assert on_disk <= set(listed), f"not described in data/README.md: {sorted(on_disk - set(listed))}"


@pytest.mark.parametrize("path,expected", sorted(listed_files().items()))
def test_checksum(path, expected):
    digest = hashlib.sha256((ew.REPO_ROOT / path).read_bytes()).hexdigest()
    assert digest == expected, f"{path} differs from the file data/README.md describes"


def test_every_listed_command_is_the_one_data_path_names():
    text = (ew.REPO_ROOT / "data" / "README.md").read_text(encoding="utf-8")
    for name, command in data.MAKE_COMMANDS.items():
        assert f"`data/{name}`" in text and f"`{command}`" in text


def test_missing_file_names_the_command_that_makes_it(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"python data/make_poetry\.py"):
        data.load_tang_poems()
    with pytest.raises(FileNotFoundError, match="not one of the book's data files"):
        data.data_path("no_such_file.txt")


def test_malformed_line_is_reported_with_its_number(monkeypatch, tmp_path):
    (tmp_path / "song_ci.tsv").write_text("苏轼\t水调歌头\t明月几时有\nbroken line\n", encoding="utf-8")
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    with pytest.raises(ValueError, match="line 2"):
        data.load_song_ci()


def test_corpora_load_as_clean_simplified_text():
    tang = ew.load_tang_poems()
    ci = ew.load_song_ci()
    assert len(tang) == 53_796 and len(ci) == 19_196
    assert tang[0].author == "太宗皇帝" and tang[0].body.startswith("秦川雄帝宅，函谷壮皇居。")
    allowed = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff，。？！；：、]+$")
    assert all(allowed.match(p.body) and len(p.body) >= 10 for p in tang + ci)
    # Traditional forms converted: 壯 → 壮, 雲 → 云 appear nowhere in the bodies.
    text = "".join(p.body for p in tang)
    assert "壯" not in text and "雲" not in text and "云" in text


def test_the_checksums_the_package_checks_are_those_of_the_readme():
    """encoding_world.data.CORPORA repeats the README's SHA-256 and poem counts of the corpora;
    the README stays the one place to read them, this test keeps the copy in step."""
    listed = listed_files()
    text = (ew.REPO_ROOT / "data" / "README.md").read_text(encoding="utf-8")
    for name, (sha, poems) in data.CORPORA.items():
        assert listed[f"data/{name}"] == sha
        assert re.search(rf"\| `data/{re.escape(name)}` \| {poems:,} ", text), f"{name}: {poems:,} poems not in the README"
        assert len(data._load_poems(name)) == poems
