"""Where the book's data lives, and loaders that say how to make a file that is missing."""
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"

# How each file under data/ is made; data/README.md lists the same commands.
MAKE_COMMANDS = {
    "tang_poems.tsv": "python data/make_poetry.py",
    "song_ci.tsv": "python data/make_poetry.py",
    "minigpt_tang.safetensors": ("python -m encoding_world.train --config cpu-full --out runs/cpu-full && "
                                 "python -m encoding_world.pretrained runs/cpu-full/checkpoint.pt"),
    "minigpt_tang.json": "python -m encoding_world.pretrained runs/cpu-full/checkpoint.pt",
}


def data_path(name: str) -> Path:
    """The path of a data file, or a FileNotFoundError that names the command making it."""
    path = DATA_DIR / name
    if not path.exists():
        how = MAKE_COMMANDS.get(name)
        hint = f"make it with `{how}` from the repository root" if how else (
            f"it is not one of the book's data files ({', '.join(sorted(MAKE_COMMANDS))})")
        raise FileNotFoundError(f"{path} is missing: {hint}")
    return path


@dataclass(frozen=True)
class Poem:
    author: str
    title: str
    body: str


def _load_poems(name: str) -> list[Poem]:
    poems = []
    with open(data_path(name), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise ValueError(f"{name}, line {number}: expected author, title and body "
                                 f"separated by tabs; regenerate it with `{MAKE_COMMANDS[name]}`")
            poems.append(Poem(*fields))
    return poems


def load_tang_poems() -> list[Poem]:
    """Complete Tang Poems (全唐诗), simplified characters, one `Poem` each."""
    return _load_poems("tang_poems.tsv")


def load_song_ci() -> list[Poem]:
    """Song ci (宋词); a ci's `title` is the tune it was written to (词牌)."""
    return _load_poems("song_ci.tsv")
