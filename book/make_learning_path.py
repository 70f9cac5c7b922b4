"""Draw the book's learning path (which lesson builds on which) as book/_static/learning_path.svg.

    python book/make_learning_path.py

The introduction shows the figure; tests/test_book.py checks that the table below names
every lesson, that every arrow points forward, and that the stored SVG is this script's output.
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from encoding_world.plotting import setup_matplotlib  # noqa: E402

OUT = ROOT / "book" / "_static" / "learning_path.svg"

# (number, short title, Chinese, part) in reading order.
LESSONS = [
    (1, "One-hot, BoW, TF-IDF", "独热编码 · TF-IDF", "I"),
    (2, "Tensors & training", "张量 · 梯度", "I"),
    (3, "word2vec", "词向量", "I"),
    (4, "Sentence embeddings", "句向量 · 检索", "I"),
    (5, "Images: a mini CLIP", "图像向量 · 多模态", "I"),
    (6, "Tokenizers", "分词 · BPE", "II"),
    (7, "Masks", "掩码", "II"),
    (8, "Attention", "注意力", "II"),
    (9, "Transformer", "编码器 · 解码器", "II"),
    (10, "n-gram LMs", "语言模型", "III"),
    (11, "RNN & LSTM", "循环神经网络", "III"),
    (12, "Mini-GPT", "迷你 GPT", "III"),
    (13, "Decoding", "采样策略", "III"),
    (14, "Modern LLMs", "现代大模型", "III"),
    (15, "Fine-tuning & LoRA", "微调 · LoRA", "IV"),
    (16, "Instruction tuning", "指令微调", "IV"),
    (17, "Kinds of learning", "学习的类型", "A"),
    (18, "Notebook to project", "从笔记本到项目", "A"),
]

# lesson -> the earlier lessons it uses directly.
BUILDS_ON = {
    1: [],
    2: [],
    3: [1, 2],
    4: [3],
    5: [2, 4],
    6: [1],
    7: [6],
    8: [2, 7],
    9: [8],
    10: [6],
    11: [10],
    12: [9, 10],
    13: [12],
    14: [12, 13],
    15: [12],
    16: [4, 13, 15],
    17: [2],
    18: [12],
}

PART_COLOURS = {"I": "#dbeafe", "II": "#dcfce7", "III": "#fef3c7", "IV": "#fce7f3", "A": "#ede9fe"}
PART_NAMES = {"I": "Part I — Text becomes numbers", "II": "Part II — From tokens to attention",
              "III": "Part III — Language models", "IV": "Part IV — Adapting a model", "A": "Appendices"}
COLUMN = {"I": 0, "II": 1, "III": 2, "IV": 3, "A": 4}
# Row of each lesson inside its part's column.
ROW = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 0, 7: 1, 8: 2, 9: 3, 10: 0, 11: 1, 12: 2, 13: 3, 14: 4, 15: 1, 16: 3.2,
       17: 0.5, 18: 2.5}


def draw(path: Path = OUT) -> None:
    setup_matplotlib()
    plt.rcParams["svg.hashsalt"] = "encoding-the-world"  # stable element ids: the file repeats byte for byte
    fig, ax = plt.subplots(figsize=(13, 7))
    width, height, dx, dy = 2.3, 0.78, 2.75, 1.25
    part_of = {number: part for number, _, _, part in LESSONS}
    centre = {n: (COLUMN[part_of[n]] * dx, -ROW[n] * dy) for n in ROW}
    for part, name in PART_NAMES.items():
        ax.text(COLUMN[part] * dx, 0.6, name.replace(" — ", "\n"), ha="center", va="bottom", fontsize=10.5,
                color="#0f172a")
    for number, title, chinese, part in LESSONS:
        x, y = centre[number]
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                    boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor=PART_COLOURS[part], edgecolor="#334155", linewidth=1))
        ax.text(x, y + 0.13, f"{number}. {title}", ha="center", va="center", fontsize=9.5)
        ax.text(x, y - 0.17, chinese, ha="center", va="center", fontsize=9, color="#334155")
    arrow = dict(arrowstyle="-|>", mutation_scale=11, color="#475569", linewidth=0.9)
    for number, earlier in BUILDS_ON.items():
        far = []
        for source in earlier:
            (x0, y0), (x1, y1) = centre[source], centre[number]
            columns_apart = round((x1 - x0) / dx)
            between = [n for n in ROW if part_of[n] == part_of[number] and ROW[source] < ROW[n] < ROW[number]]
            if columns_apart == 0 and not between:                      # the next box down
                ends, bend = ((x0, y0 - height / 2), (x1, y1 + height / 2)), 0.0
            elif columns_apart == 0:                                    # skips a box: arc round the left
                ends, bend = ((x0 - width / 2, y0), (x1 - width / 2, y1)), 0.45
            elif columns_apart <= 2:                                    # from the right side to the left side
                ends, bend = ((x0 + width / 2, y0), (x1 - width / 2, y1)), 0.0
            else:                                                       # too far to draw: say it in words
                far.append(source)
                continue
            ax.add_patch(FancyArrowPatch(*ends, connectionstyle=f"arc3,rad={bend}", **arrow))
        if far:
            x, y = centre[number]
            names = " and ".join(str(n) for n in far)
            ax.text(x, y - height / 2 - 0.12, f"after lesson {names}", ha="center", va="top", fontsize=8.5,
                    style="italic", color="#475569")
    ax.set_xlim(-width / 2 - 1.0, 4 * dx + width / 2 + 0.2)     # room for the arcs left of column I
    ax.set_ylim(-max(ROW.values()) * dy - height, 1.4)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight", metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)


if __name__ == "__main__":
    draw()
    print(f"wrote {OUT.relative_to(ROOT)}")
