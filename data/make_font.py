"""Make the book's CJK plotting font: a subset of Noto Sans SC Regular.

    python data/make_font.py             # downloads the font with `npm pack`
    python data/make_font.py --tgz PATH  # uses @expo-google-fonts/noto-sans-sc 0.4.3 you have

The full font is 10 MB; the book needs only the glyphs its figures can show: printable
ASCII and Latin-1, common punctuation, every character of GB 2312 (the 6,763 common
simplified characters), and every character of the poetry corpora (run
data/make_poetry.py first). The subset goes to encoding_world/fonts/, beside the font's
licence (SIL Open Font License 1.1). Needs fonttools.
"""
import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@expo-google-fonts/noto-sans-sc@0.4.3"
MEMBER = "package/400Regular/NotoSansSC_400Regular.ttf"
HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "encoding_world" / "fonts" / "NotoSansSC-Regular-subset.ttf"


def gb2312_characters() -> set[str]:
    chars = set()
    for high in range(0xB0, 0xF8):
        for low in range(0xA1, 0xFF):
            try:
                chars.add(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return chars


def wanted_characters() -> str:
    chars = {chr(c) for c in range(0x20, 0x7F)} | {chr(c) for c in range(0xA0, 0x100)}
    chars |= set("，。？！；：、“”‘’（）《》【】—…·「」『』〈〉－～①②③④⑤")
    chars |= gb2312_characters()
    for corpus in ("tang_poems.tsv", "song_ci.tsv"):
        path = HERE / corpus
        if not path.exists():
            sys.exit(f"{path} is missing: run `python data/make_poetry.py` first")
        chars |= set(path.read_text(encoding="utf-8")) - {"\t", "\n"}
    return "".join(sorted(chars))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tgz", type=Path, help="expo-google-fonts-noto-sans-sc-0.4.3.tgz")
    args = parser.parse_args()
    from fontTools import subset

    text = wanted_characters()
    with tempfile.TemporaryDirectory() as tmp:
        tgz = args.tgz
        if tgz is None:
            name = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1]
            tgz = Path(tmp) / name
        with tarfile.open(tgz) as tar:
            full = Path(tmp) / "full.ttf"
            full.write_bytes(tar.extractfile(MEMBER).read())
            (OUT.parent / "OFL.txt").write_bytes(tar.extractfile("package/LICENSE_FONT").read())
        options = subset.Options()
        options.name_IDs = ["*"]       # keep the family name matplotlib looks up
        options.layout_features = []   # plots need glyphs only, not OpenType shaping
        options.hinting = False
        font = subset.load_font(str(full), options)
        subsetter = subset.Subsetter(options)
        subsetter.populate(text=text)
        subsetter.subset(font)
        # A fixed timestamp keeps the output the same byte for byte on every run.
        font["head"].modified = font["head"].created
        subset.save_font(font, str(OUT), options)
    print(f"{OUT.relative_to(HERE.parent)}: {len(text):,} characters, {OUT.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
