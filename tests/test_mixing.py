"""The mixing dataset draws sources at the rates asked for, reproducibly, and refuses bad input."""
import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from encoding_world import lm_data
from encoding_world.data import Poem
from encoding_world.mixing import MixedDataset, PoemWindows, draw_plan, empirical_shares, normalise_rates, parse_rates


class Tagged(Dataset):
    """Item i of source `tag` is (tag, i): every item says where it came from."""

    def __init__(self, tag, size):
        self.tag, self.size = tag, size

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        if not 0 <= i < self.size:
            raise IndexError(i)
        return self.tag, i


def sources(*sizes):
    return {f"s{k}": Tagged(f"s{k}", size) for k, size in enumerate(sizes)}


# ------------------------------------------------------------------------ the 2-point rule

@pytest.mark.parametrize("rates", [[1, 1], [9, 3, 3, 1], [0.7, 0.2, 0.1], [5, 0, 1], [1, 2, 3, 4, 5]])
@pytest.mark.parametrize("seed", [0, 1, 2024])
def test_shares_over_10000_draws_are_within_2_points_of_the_rates(rates, seed):
    mixed = MixedDataset(sources(*[50 + 10 * k for k in range(len(rates))]), rates, 10_000, seed=seed)
    expected = [r / sum(rates) for r in rates]
    shares = list(mixed.shares().values())
    assert len(shares) == len(rates)
    for share, rate in zip(shares, expected):
        assert abs(share - rate) <= 0.02
    assert math.isclose(sum(shares), 1.0)


def test_a_zero_rate_source_is_never_drawn():
    mixed = MixedDataset(sources(10, 10, 10), [1, 0, 1], 10_000, seed=3)
    assert mixed.shares()["s1"] == 0.0
    assert 1 not in set(mixed.source_ids.tolist())
    last_zero = MixedDataset(sources(10, 10, 10), [1, 2, 0], 10_000, seed=4)
    assert last_zero.shares()["s2"] == 0.0


def test_report_counts_draws_and_passes():
    mixed = MixedDataset(sources(100, 20), [3, 1], 4_000, seed=0)
    rows = mixed.report()
    assert [r["source"] for r in rows] == ["s0", "s1"]
    assert sum(r["draws"] for r in rows) == 4_000
    assert [r["rate"] for r in rows] == [0.75, 0.25]
    for r in rows:
        assert r["share"] == r["draws"] / 4_000
        assert r["passes"] == r["draws"] / r["size"]
    assert rows[1]["passes"] > 40          # the small source is read about 50 times over


def test_items_within_a_source_are_uniform():
    source_ids, item_ids = draw_plan([1], [4], 20_000, torch.Generator().manual_seed(0))
    assert source_ids.eq(0).all()
    counts = torch.bincount(item_ids, minlength=4).double() / 20_000
    assert torch.all((counts - 0.25).abs() < 0.02)


# ------------------------------------------------------------------------ reproducibility

def test_same_seed_same_draws_other_seed_other_draws():
    a = MixedDataset(sources(30, 40, 5), [2, 1, 1], 1_000, seed=7)
    b = MixedDataset(sources(30, 40, 5), [2, 1, 1], 1_000, seed=7)
    c = MixedDataset(sources(30, 40, 5), [2, 1, 1], 1_000, seed=8)
    assert torch.equal(a.source_ids, b.source_ids) and torch.equal(a.item_ids, b.item_ids)
    assert [a[d] for d in range(1_000)] == [b[d] for d in range(1_000)]
    assert not torch.equal(a.source_ids, c.source_ids)


def test_rates_are_normalised_so_scaled_rates_give_the_same_draws():
    a = MixedDataset(sources(30, 40), [3, 1], 500, seed=1)
    b = MixedDataset(sources(30, 40), [0.75, 0.25], 500, seed=1)
    c = MixedDataset(sources(30, 40), {"s1": 1, "s0": 3}, 500, seed=1)
    assert torch.equal(a.source_ids, b.source_ids) and torch.equal(a.item_ids, b.item_ids)
    assert torch.equal(a.source_ids, c.source_ids)
    assert torch.allclose(a.rates, torch.tensor([0.75, 0.25], dtype=torch.float64))


def test_access_order_does_not_matter():
    mixed = MixedDataset(sources(13, 17), [1, 1], 200, seed=0)
    forward = [mixed[d] for d in range(200)]
    backward = [mixed[d] for d in reversed(range(200))][::-1]
    assert forward == backward


def test_draw_plan_matches_a_loop_over_the_same_uniform_numbers():
    rates, sizes = [0.5, 0.3, 0.2], [7, 11, 3]
    source_ids, item_ids = draw_plan(rates, sizes, 300, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    u = torch.rand(300, generator=g, dtype=torch.float64)
    v = torch.rand(300, generator=g, dtype=torch.float64)
    cumulative = [0.5, 0.8, 1.0]
    for d in range(300):
        k = next(k for k, c in enumerate(cumulative) if u[d] < c)
        assert source_ids[d] == k
        assert item_ids[d] == math.floor(v[d].item() * sizes[k])


# ------------------------------------------------------------------------ the right source

def test_items_come_from_the_right_source():
    mixed = MixedDataset(sources(10, 20, 30), [1, 1, 1], 600, seed=2, return_source=True)
    for d in range(600):
        (tag, index), k = mixed[d]
        name, item = mixed.locate(d)
        assert tag == name == mixed.names[k] and index == item
        assert 0 <= index < mixed.sizes[k]


def test_works_with_a_dataloader():
    a = TensorDataset(torch.zeros(50, 3), torch.zeros(50, dtype=torch.long))
    b = TensorDataset(torch.ones(20, 3), torch.ones(20, dtype=torch.long))
    mixed = MixedDataset({"zeros": a, "ones": b}, [1, 1], 64, seed=0, return_source=True)
    batches = list(DataLoader(mixed, batch_size=16, num_workers=0))
    assert len(batches) == 4
    (x, label), source = batches[0]
    assert x.shape == (16, 3) and label.shape == (16,) and source.shape == (16,)
    for (x, label), source in batches:
        assert torch.equal(label, source)                        # ones came from "ones"
        assert torch.equal(x, source[:, None].float().expand(-1, 3))
    again = list(DataLoader(mixed, batch_size=16))
    assert all(torch.equal(p[1], q[1]) for p, q in zip(batches, again))


# ------------------------------------------------------------------------ clear errors

@pytest.mark.parametrize("rates, message", [
    ([1, -1], "finite and >= 0"),
    ([1, float("nan")], "finite and >= 0"),
    ([1, float("inf")], "finite and >= 0"),
    ([0, 0], "sum to zero"),
    ([1, 1, 1], "3 sampling rates for 2 sources"),
    ([1], "1 sampling rates for 2 sources"),
])
def test_bad_rates_are_refused(rates, message):
    with pytest.raises(ValueError, match=message):
        MixedDataset(sources(5, 5), rates, 10)


def test_other_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\['s1'\] are empty"):
        MixedDataset(sources(5, 0), [1, 1], 10)
    with pytest.raises(ValueError, match="non-empty mapping"):
        MixedDataset({}, [], 10)
    with pytest.raises(ValueError, match="non-empty mapping"):
        MixedDataset([Tagged("a", 3)], [1], 10)
    with pytest.raises(ValueError, match="name every source"):
        MixedDataset(sources(5, 5), {"s0": 1, "other": 1}, 10)
    with pytest.raises(ValueError, match="positive integer"):
        MixedDataset(sources(5, 5), [1, 1], 0)
    with pytest.raises(ValueError, match="no sampling rates"):
        normalise_rates([])
    with pytest.raises(ValueError, match="no items but a positive rate"):
        draw_plan([1, 1], [3, 0], 10, torch.Generator())
    with pytest.raises(IndexError):
        MixedDataset(sources(5, 5), [1, 1], 10)[10]
    with pytest.raises(ValueError, match="no draws"):
        empirical_shares(torch.zeros(0, dtype=torch.long), 2)


def test_parse_rates():
    assert parse_rates("9,3,3,1") == [9.0, 3.0, 3.0, 1.0]
    assert normalise_rates(parse_rates("9,3,3,1")).tolist() == [0.5625, 0.1875, 0.1875, 0.0625]
    with pytest.raises(ValueError, match="separated by commas"):
        parse_rates("9;3")


# ------------------------------------------------------------------------ poem windows

POEMS = [Poem("甲", "一", "床前明月光，疑是地上霜。"), Poem("乙", "二", "举头望明月，低头思故乡。"),
         Poem("丙", "三", "春眠不觉晓，处处闻啼鸟。")]


def test_poem_windows_are_the_consecutive_windows_of_the_stream():
    vocab = lm_data.CharVocab.build((p.body for p in POEMS), 20)
    windows = PoemWindows(POEMS, vocab, block_size=5, name="toy")
    stream = lm_data.encode_poems(POEMS, vocab)
    assert len(windows) == (len(stream) - 1) // 5 == 7
    expected = lm_data.consecutive_windows(stream, block_size=5)
    for i in range(len(windows)):
        x, y = windows[i]
        assert torch.equal(x, expected[0][i]) and torch.equal(y, expected[1][i])
        assert torch.equal(x[1:], y[:-1])                         # y is x shifted by one
    assert vocab.decode(windows[0][0]) == "床前明月光"
    assert torch.equal(windows[-1][0], windows[6][0])
    with pytest.raises(IndexError):
        windows[7]
    assert "toy" in repr(windows)


def test_poem_windows_from_no_poems_is_empty_and_the_mixer_refuses_it():
    vocab = lm_data.CharVocab.build((p.body for p in POEMS), 20)
    empty = PoemWindows([], vocab, block_size=5, name="nothing")
    assert len(empty) == 0
    with pytest.raises(ValueError, match="nothing"):
        MixedDataset({"toy": PoemWindows(POEMS, vocab, 5), "nothing": empty}, [1, 1], 10)
    with pytest.raises(ValueError, match="block_size"):
        PoemWindows(POEMS, vocab, block_size=0)


def test_tang_and_song_sources_use_the_shared_split():
    tang = [Poem("a", str(i), "白日依山尽，黄河入海流。") for i in range(40)]
    vocab = lm_data.CharVocab.build((p.body for p in tang), 30)
    train = PoemWindows.tang(vocab, 8, "train", poems=tang)
    val = PoemWindows.song(vocab, 8, "val", poems=tang)
    assert (train.num_poems, val.num_poems) == (38, 2)           # every 20th poem is held out
    assert train.name == "tang/train" and val.name == "song/val"
    with pytest.raises(ValueError, match="split"):
        PoemWindows.tang(vocab, 8, "test", poems=tang)


def test_poem_windows_mix_in_a_dataloader():
    vocab = lm_data.CharVocab.build((p.body for p in POEMS), 20)
    a = PoemWindows(POEMS[:2], vocab, 4, name="a")
    b = PoemWindows(POEMS[2:], vocab, 4, name="b")
    mixed = MixedDataset({"a": a, "b": b}, [1, 1], 32, seed=0, return_source=True)
    for (x, y), k in DataLoader(mixed, batch_size=8):
        assert x.shape == y.shape == (8, 4)
        for row, source in zip(x, k):
            pool = a if source == 0 else b
            assert any(torch.equal(row, pool[i][0]) for i in range(len(pool)))
