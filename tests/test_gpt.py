import pytest
import torch

from encoding_world import lm_data
from encoding_world.data import Poem
from encoding_world.gpt import GPT, GPTConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, d_model=32)).eval()


def test_logits_shape_and_loss_at_initialisation(model):
    x, y = torch.randint(50, (3, 16)), torch.randint(50, (3, 16))
    logits, loss = model(x, y)
    assert logits.shape == (3, 16, 50)
    # Small initial weights: predictions near uniform, so the loss is near ln(50).
    assert abs(loss.item() - torch.log(torch.tensor(50.0)).item()) < 0.1


def test_future_tokens_never_change_earlier_logits(model):
    x = torch.randint(50, (1, 16))
    changed = x.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 50
    assert torch.equal(model(x)[0][:, :10], model(changed)[0][:, :10])
    assert not torch.equal(model(x)[0][:, 10:], model(changed)[0][:, 10:])


def test_weights_are_tied_and_counted_once(model):
    assert model.lm_head.weight is model.token_embedding.weight
    unique = sum(p.numel() for p in set(model.parameters()))
    assert model.num_parameters(non_embedding=False) == unique
    assert model.num_parameters() == unique - 16 * 32
    c = model.config
    assert model.flops_per_token() == 6 * model.num_parameters() + 6 * c.n_layer * c.block_size * c.d_model


def test_generate_greedy_is_deterministic_and_respects_the_window(model):
    start = torch.zeros(1, 1, dtype=torch.long)
    a = model.generate(start, 30, temperature=0)
    assert a.shape == (1, 31) and torch.equal(a, model.generate(start, 30, temperature=0))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model.generate(start, 20, top_k=5, generator=g1), model.generate(start, 20, top_k=5, generator=g2))


def test_generate_refuses_meaningless_settings(model):
    prompt = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 2, temperature=-0.5)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 2, top_k=0)


def test_too_long_input_is_refused(model):
    with pytest.raises(ValueError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_model_learns_a_repeating_pattern():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, d_model=16))
    data = torch.tensor([0, 1, 2, 3, 4] * 40)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        x, y = lm_data.random_batch(data, 8, 8, torch.Generator().manual_seed(_))
        loss = model(x, y)[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_vocab_encodes_decodes_and_names_unknown_characters():
    vocab = lm_data.CharVocab.build(["床前明月光", "明月几时有"], size=6)
    assert vocab.tokens[:2] == [lm_data.END, lm_data.UNKNOWN]
    assert vocab.tokens[2:4] == ["明", "月"]  # most frequent first
    assert len(vocab) == 6
    ids = vocab.encode("明月光\n")
    assert vocab.decode(ids) == "明月" + vocab.decode([vocab.index.get("光", 1)]) + "\n"
    with pytest.raises(KeyError, match="霜"):
        vocab.encode("霜", strict=True)
    assert vocab.encode("霜") == [1]
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([99])


def test_split_and_batches():
    poems = [Poem("a", str(i), "春眠不觉晓处处闻啼鸟") for i in range(40)]
    train, val = lm_data.split_poems(poems)
    assert len(val) == 2 and len(train) == 38 and not {p.title for p in train} & {p.title for p in val}
    vocab = lm_data.CharVocab.build([p.body for p in train], 20)
    stream = lm_data.encode_poems(train, vocab)
    assert len(stream) == 38 * 11 and stream[10].item() == 0  # each poem ends with END
    x, y = lm_data.random_batch(stream, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8) and torch.equal(x[:, 1:], y[:, :-1])
    cx, cy = lm_data.consecutive_windows(stream, 8, max_windows=5)
    assert cx.shape == (5, 8) and torch.equal(cx[1], stream[8:16]) and torch.equal(cy[1], stream[9:17])
    assert len(lm_data.consecutive_windows(stream, 8)[0]) == (len(stream) - 1) // 8
    fx, fy = lm_data.fixed_windows(stream, 8, 3)               # first, middle and last windows
    assert torch.equal(fx[0], stream[:8]) and torch.equal(fy[-1], stream[-8:])
    with pytest.raises(ValueError, match="shorter than a window"):
        lm_data.random_batch(stream[:5], 1, 8, torch.Generator())
