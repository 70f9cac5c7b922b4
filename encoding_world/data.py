"""Where the book's data lives, and loaders that say how to make a file that is missing.

The poem corpora are checked against their SHA-256 (the values data/README.md lists; a
test keeps the two in step) once per process, so a file that was cut short, edited or
re-encoded is reported with the command that restores it, instead of silently giving
other numbers than the book's.
"""
import hashlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"

# How each file under data/ is made; data/README.md lists the same commands.
MAKE_COMMANDS = {
    "tang_poems.tsv": "python data/make_poetry.py",
    "song_ci.tsv": "python data/make_poetry.py",
    "minigpt_tang.safetensors": ("python -m encoding_world.train --config cpu-full --out runs/cpu-full && "
                                 "python -m encoding_world.pretrained runs/cpu-full/checkpoint.pt --out data --overwrite"),
    "minigpt_tang.json": "python -m encoding_world.pretrained runs/cpu-full/checkpoint.pt --out data --overwrite",
}

# SHA-256 and number of poems of the corpora, as data/README.md lists them
# (tests/test_data.py checks that the two agree).
CORPORA = {
    "tang_poems.tsv": ("5a260bdcfa1f694bc6245fd65a7423ff1115102702c9c3cbbe8571ede7f96635", 53_796),
    "song_ci.tsv": ("99584a9c342045201c04eebebde147cc93d91b3d0cc100243cc9a4414f74b522", 19_196),
}

BOM = b"\xef\xbb\xbf"   # the UTF-8 byte-order mark some editors put at the start of a file

_verified: set = set()  # (path, size, mtime) of corpus files whose checksum matched in this process


class DataError(ValueError):
    """A data file of the book exists but is not the book's: damaged, cut short or edited."""


def restore_hint(name: str) -> str:
    """How to get the book's own copy of data/`name` back."""
    how = MAKE_COMMANDS.get(name)
    return (f"restore the book's copy with `git checkout -- data/{name}` (or clone the repository again)"
            + (f", or remake it with `{how}` from the repository root" if how else ""))


def data_path(name: str) -> Path:
    """The path of a data file, or a FileNotFoundError that names the command making it."""
    path = DATA_DIR / name
    if not path.exists():
        how = MAKE_COMMANDS.get(name)
        hint = f"make it with `{how}` from the repository root" if how else (
            f"it is not one of the book's data files ({', '.join(sorted(MAKE_COMMANDS))})")
        raise FileNotFoundError(f"{path} is missing: {hint}")
    if not path.is_file():
        raise DataError(f"{path} is a folder, not a file: remove it, then {restore_hint(name)}")
    return path


def sha256(path) -> str:
    """The SHA-256 of a file, in hex (read a megabyte at a time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Poem:
    author: str
    title: str
    body: str


def _load_poems(name: str) -> list[Poem]:
    path = data_path(name)
    raw = path.read_bytes()
    if raw.startswith(BOM):        # added by an editor: not part of the text
        raw = raw[len(BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path} is not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line} cannot be "
                        f"decoded): it is damaged or was saved in another encoding; {restore_hint(name)}") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()                # the newline that ends the last line
    poems = []
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(f"{path}, line {number}: expected author, title and body separated by tabs, "
                            f"got {len(fields)} field(s); {restore_hint(name)}")
        poems.append(Poem(*fields))
    _verify_corpus(path, name, raw, len(poems))
    return poems


def _verify_corpus(path: Path, name: str, raw: bytes, poems: int) -> None:
    """DataError unless `raw` (the file's bytes after any BOM) is the book's file.

    The SHA-256 is computed once per process for each version (size, modification time)
    of the file: about 30 ms for the Tang poems, next to ~300 ms to parse them."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    expected, expected_poems = CORPORA[name]
    found = hashlib.sha256(raw).hexdigest()
    if found != expected:
        differences = []
        if poems != expected_poems:
            differences.append(f"it holds {poems:,} poems where the book's holds {expected_poems:,}: "
                               f"cut short, or added to")
        if b"\r\n" in raw:
            differences.append("it has Windows line ends (CRLF), the book's file has LF")
        detail = "; ".join(differences) or "a character was changed"
        raise DataError(f"{path} is not the book's file: its SHA-256 is {found[:12]}…, data/README.md lists "
                        f"{expected[:12]}… ({detail}). Lessons would give other numbers than the book's; "
                        f"{restore_hint(name)}")
    _verified.add(key)


def load_tang_poems() -> list[Poem]:
    """Complete Tang Poems (全唐诗), simplified characters, one `Poem` each."""
    return _load_poems("tang_poems.tsv")


def load_song_ci() -> list[Poem]:
    """Song ci (宋词); a ci's `title` is the tune it was written to (词牌)."""
    return _load_poems("song_ci.tsv")


# How a text file of one's own is cut into documents (`--documents`); nothing is guessed.
DOCUMENT_LAYOUTS = ("blank-lines", "lines")


def load_documents(path, layout: str) -> tuple[list[str], str]:
    """The documents of a UTF-8 text file, and the file's SHA-256.

    layout "blank-lines": documents are separated by one or more blank lines (lines holding
    nothing or only spaces and tabs), and may hold single newlines; "lines": every line that
    is not blank is one document. Windows line ends (CRLF) are read as newlines, a leading
    byte-order mark is dropped. A missing or empty file, a folder, or bytes that are not
    UTF-8 (the byte offset and line are named) raise an error that says what to do.
    """
    import re

    if layout not in DOCUMENT_LAYOUTS:
        raise ValueError(f"documents must be one of {', '.join(DOCUMENT_LAYOUTS)}, got {layout!r}: say how the "
                         f"file separates its documents (by blank lines, or one per line)")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such file; give the path of a UTF-8 text file")
    if not path.is_file():
        raise DataError(f"--data {path} is a folder, not a text file: give the path of a UTF-8 text file")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    skipped = len(BOM) if raw.startswith(BOM) else 0
    raw = raw[skipped:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skipped + err.start
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"--data {path} is not UTF-8 text: the byte 0x{raw[err.start]:02x} at byte offset {offset} "
                        f"(line {line}) cannot be decoded. Save the file as UTF-8 (e.g. `iconv -f GB18030 -t UTF-8 "
                        f"in.txt > out.txt` for a Chinese file in GB18030) and try again") from None
    text = text.replace("\r\n", "\n")
    if layout == "lines":
        documents = [line for line in text.split("\n") if line.strip()]
    else:
        documents = [doc.strip("\n") for doc in re.split(r"\n[ \t]*\n(?:[ \t]*\n)*", text)]
        documents = [doc for doc in documents if doc.strip()]
    if not documents:
        what = "is empty" if not raw else "holds only blank lines and spaces"
        raise DataError(f"--data {path} {what}: there is no text to train on")
    return documents, digest
