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


def heatmap(ax, values, row_labels, col_labels=None, *, cmap="Blues", vmin=0.0, vmax=1.0, annotate: str | None = None,
            title: str | None = None, rotate: int = 0):
    """Draw a matrix as coloured cells with a label for every row and column (the columns
    take the row labels unless given); with `annotate` (a format such as ".2f") every cell
    shows its value, in white on dark cells, whatever the colour map. Returns the image, for a
    colour bar. Lesson 1 writes it out."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    col_labels = row_labels if col_labels is None else col_labels
    if values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values of shape {values.shape} need {values.shape[0]} row labels and "
                         f"{values.shape[1]} column labels, got {len(row_labels)} and {len(col_labels)}")
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=rotate, ha="right" if rotate else "center")
    ax.set_yticks(range(len(row_labels)), row_labels)
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            r, g, b, _ = image.cmap(image.norm(v))          # the cell's colour: dark cells get white text
            ax.text(j, i, format(v, annotate), ha="center", va="center", fontsize=8,
                    color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
    if title:
        ax.set_title(title)
    return image
