import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402

import encoding_world as ew  # noqa: E402
from encoding_world.plotting import FONT_NAME, FONT_PATH  # noqa: E402


def test_font_has_the_glyphs_the_book_shows():
    from fontTools.ttLib import TTFont

    cmap = TTFont(FONT_PATH).getBestCmap()
    for ch in "我爱北京天安门月日山水词向量注意力掩码" + "".join({p.body[0] for p in ew.load_tang_poems()[:500]}):
        assert ord(ch) in cmap, f"{ch} missing from {FONT_PATH.name}"


def test_chinese_labels_render_without_missing_glyph_warnings(tmp_path, caplog):
    ew.setup_matplotlib()
    assert FONT_NAME in {f.name for f in font_manager.fontManager.ttflist}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph is a UserWarning: make it fail
        fig, ax = plt.subplots()
        ax.set_title("词向量 word vectors: 月 日 山 水")
        ax.set_xlabel("scale $1/\\sqrt{d_k}$")
        ax.set_ylabel("注意力权重 attention weight")
        ax.bar(["我", "爱", "北京"], [1, 2, 3])
        fig.savefig(tmp_path / "cjk.png")
        plt.close(fig)
    assert "does not have a glyph" not in caplog.text
    assert (tmp_path / "cjk.png").stat().st_size > 1000
