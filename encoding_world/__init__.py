"""Code shared by the lessons of *Encoding the World*.

Each piece is first written out step by step in the lesson that introduces it; the lesson
then checks that it equals the version kept here, and later lessons import it.
"""
from .data import DATA_DIR, REPO_ROOT, data_path, load_song_ci, load_tang_poems
from .plotting import setup_matplotlib
from .runtime import get_device, set_seed
from .text import cosine_similarity, tokenize_zh, top_k

__all__ = [
    "DATA_DIR", "REPO_ROOT", "data_path", "load_tang_poems", "load_song_ci",
    "setup_matplotlib", "get_device", "set_seed",
    "cosine_similarity", "tokenize_zh", "top_k",
]
__version__ = "0.1.0"
