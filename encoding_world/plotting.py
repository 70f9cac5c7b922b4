"""Matplotlib set up once for the book: a font with Chinese glyphs, and a quiet, clean style."""
from pathlib import Path

FONT_PATH = Path(__file__).resolve().parent / "fonts" / "NotoSansSC-Regular-subset.ttf"
FONT_NAME = "Noto Sans SC"


def setup_matplotlib() -> None:
    """Register the book's CJK font and make it matplotlib's default sans-serif face.

    The font ships with the package (a subset of Noto Sans SC, SIL Open Font License), so
    Chinese labels render the same on every machine, Colab included, with no system font.
    """
    import matplotlib as mpl
    from matplotlib import font_manager

    if not FONT_PATH.exists():
        raise FileNotFoundError(f"{FONT_PATH} is missing: make it with `python data/make_font.py`")
    if FONT_NAME not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(FONT_PATH))
    mpl.rcParams.update({
        # DejaVu Sans first for Latin letters and symbols; each glyph it lacks falls back
        # to the CJK font (matplotlib >= 3.6). Mathtext ($...$) does not fall back, so
        # keep Chinese outside dollar signs in labels.
        "font.family": ["DejaVu Sans", FONT_NAME],
        "axes.unicode_minus": False,
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "figure.figsize": (6.4, 4.0),
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
