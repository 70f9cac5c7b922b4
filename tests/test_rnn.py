import dataclasses
import math

import pytest
import torch
from torch import nn

from encoding_world import decoding, lm_data
from encoding_world.rnn import CharRNN, CharRNNConfig


def rnn_step_by_step(x, W_ih, W_hh, b_ih, b_hh):
    h = x.new_zeros(x.shape[0], W_hh.shape[0])
    states = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh)
        states.append(h)
    return torch.stack(states, dim=1)


def lstm_step_by_step(x, W_ih, W_hh, b_ih, b_hh):
    d = W_hh.shape[1]
    h, c = x.new_zeros(x.shape[0], d), x.new_zeros(x.shape[0], d)
    states = []
    for t in range(x.shape[1]):
        i, f, g, o = (x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh).split(d, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        states.append(h)
    return torch.stack(states, dim=1)


STEP_BY_STEP = {"rnn": rnn_step_by_step, "lstm": lstm_step_by_step}


def make(cell, vocab_size=40, d_model=16, n_layer=1):
    torch.manual_seed(0)
    return CharRNN(CharRNNConfig(vocab_size=vocab_size, d_model=d_model, n_layer=n_layer, cell=cell)).eval()


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_torch_modules_equal_the_recurrence_written_step_by_step(cell):
    torch.manual_seed(1)
    x = torch.randn(3, 11, 8)
    module = (nn.RNN if cell == "rnn" else nn.LSTM)(8, 12, batch_first=True)
    with torch.no_grad():
        ours = STEP_BY_STEP[cell](x, module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
        theirs = module(x)[0]
    assert (ours - theirs).abs().max().item() < 1e-6


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_char_rnn_is_embedding_recurrence_and_tied_head(cell):
    model = make(cell)
    ids = torch.randint(40, (2, 9), generator=torch.Generator().manual_seed(2))
    r = model.rnn
    with torch.no_grad():
        x = model.token_embedding.weight[ids] * math.sqrt(16)
        states = STEP_BY_STEP[cell](x, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)
        expected = states @ model.token_embedding.weight.T
        logits, loss = model(ids)
    assert loss is None and logits.shape == (2, 9, 40)
    assert (logits - expected).abs().max().item() < 1e-5
    assert model.lm_head.weight is model.token_embedding.weight


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_loss_at_initialisation_is_near_uniform_and_matches_cross_entropy(cell):
    model = make(cell, vocab_size=300, d_model=32)
    x, y = torch.randint(300, (4, 20)), torch.randint(300, (4, 20))
    logits, loss = model(x, y)
    assert math.isclose(loss.item(), nn.functional.cross_entropy(logits.reshape(-1, 300), y.reshape(-1)).item(),
                        rel_tol=1e-6)
    assert abs(loss.item() - math.log(300)) < 0.3


@pytest.mark.parametrize("cell,per_layer", [("rnn", 1), ("lstm", 4)])
def test_parameter_count_by_hand(cell, per_layer):
    V, d = 40, 16
    for n_layer in (1, 2):
        model = make(cell, V, d, n_layer)
        expected = V * d + n_layer * per_layer * (2 * d * d + 2 * d)
        assert model.num_parameters() == expected == model.num_parameters(non_embedding=False)
        assert expected == sum(p.numel() for p in set(model.parameters()))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_carrying_the_state_equals_reading_everything_at_once(cell):
    model = make(cell, n_layer=2)
    ids = torch.randint(40, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole, _ = model.forward_with_state(ids)
        first, state = model.forward_with_state(ids[:, :5])
        rest, _ = model.forward_with_state(ids[:, 5:], state)
    assert torch.allclose(torch.cat([first, rest], dim=1), whole, atol=1e-5)


def test_future_tokens_never_change_earlier_logits():
    model = make("lstm")
    x = torch.randint(40, (1, 10))
    changed = x.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % 40
    with torch.no_grad():
        assert torch.equal(model(x)[0][:, :6], model(changed)[0][:, :6])
        assert not torch.equal(model(x)[0][:, 6:], model(changed)[0][:, 6:])


def test_generate_is_greedy_deterministic_and_stops():
    model = make("lstm")
    start = torch.zeros(1, 1, dtype=torch.long)
    a = model.generate(start, 15, temperature=0)
    assert a.shape == (1, 16) and torch.equal(a, model.generate(start, 15, temperature=0))
    with torch.no_grad():   # greedy: each new token is the argmax after re-reading everything before it
        for n in range(1, 16):
            assert model(a[:, :n])[0][0, -1].argmax().item() == a[0, n].item()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model.generate(start, 10, top_k=5, generator=g1), model.generate(start, 10, top_k=5, generator=g2))
    stop = a[0, 1].item()
    assert model.generate(start, 15, temperature=0, stop_id=stop).shape == (1, 2)


def test_generate_refuses_meaningless_settings():
    model = make("rnn")
    prompt = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 2, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 2, top_k=0)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="cell must be one of rnn, lstm, got 'gru'"):
        CharRNN(CharRNNConfig(vocab_size=10, cell="gru"))
    with pytest.raises(ValueError, match="d_model must be a positive integer, got 0"):
        CharRNN(CharRNNConfig(vocab_size=10, d_model=0))


def test_bad_inputs_name_what_was_expected():
    model = make("rnn")
    with pytest.raises(ValueError, match=r"token_ids must be \[batch, len\] token ids"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="token_ids must hold integer token ids"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"token_ids holds the id 40, outside the vocabulary 0\.\.39"):
        model(torch.tensor([[0, 40]]))
    with pytest.raises(ValueError, match="no token"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets must have the shape of token_ids \[1, 4\], got \[1, 3\]"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="targets holds the id -1"):
        model(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, -1]]))


class Rereading(torch.nn.Module):
    """The same model without a state: decode re-reads the whole text at every step."""

    def __init__(self, model, block_size):
        super().__init__()
        self.model = model
        self.config = dataclasses.replace(model.config)
        self.config.block_size = block_size

    def forward(self, token_ids, targets=None):
        return self.model(token_ids, targets)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_decode_carries_the_state_and_writes_what_rereading_writes(cell):
    model = make(cell, n_layer=2)
    rereading = Rereading(model, block_size=100)
    assert not hasattr(rereading, "next_logits") and hasattr(model, "next_logits")
    prompt = torch.randint(40, (3, 4), generator=torch.Generator().manual_seed(4))
    greedy = decoding.decode(model, prompt, 12, temperature=0)
    assert greedy.shape == (3, 16) and torch.equal(greedy, decoding.decode(rereading, prompt, 12, temperature=0))
    assert torch.equal(model.generate(prompt, 12, temperature=0), greedy)
    sampled = [decoding.decode(m, prompt, 12, top_k=10, top_p=0.9, generator=torch.Generator().manual_seed(5))
               for m in (model, rereading)]
    assert torch.equal(*sampled)


def test_next_logits_reads_the_prompt_once_then_one_token_per_step():
    model = make("lstm")
    ids = torch.randint(40, (2, 7), generator=torch.Generator().manual_seed(6))
    calls = []
    hook = model.rnn.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[1]))
    with torch.no_grad():
        logits, state = model.next_logits(ids[:, :5])
        assert torch.allclose(logits, model(ids[:, :5])[0][:, -1], atol=1e-6)
        for n in (6, 7):
            logits, state = model.next_logits(ids[:, :n], state)
            assert torch.allclose(logits, model(ids[:, :n])[0][:, -1], atol=1e-5)
    hook.remove()
    assert calls == [5, 5, 1, 6, 1, 7]      # next_logits: 5, 1, 1; the full re-reads in between: 5, 6, 7
    model.generate(ids[:, :5], 3, temperature=0)


def test_decode_stops_rows_of_a_recurrent_model_and_pads_them():
    model = make("rnn")
    prompt = torch.randint(40, (4, 3), generator=torch.Generator().manual_seed(7))
    free = decoding.decode(model, prompt, 10, temperature=0)
    stop = free[0, 5].item()                    # row 0 writes it as its third new token
    out = decoding.decode(model, prompt, 10, temperature=0, stop_id=stop)
    for row, full in zip(out.tolist(), free.tolist()):
        new = full[3:]
        if stop in new:
            cut = 3 + new.index(stop) + 1
            assert row[:cut] == full[:cut] and all(t == stop for t in row[cut:])
        else:
            assert row == full[:len(row)]


def test_model_learns_a_repeating_pattern():
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=5, d_model=16, cell="lstm"))
    data = torch.tensor([0, 1, 2, 3, 4] * 40)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(150):
        x, y = lm_data.random_batch(data, 8, 8, torch.Generator().manual_seed(step))
        loss = model(x, y)[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_trains_under_cpu_autocast(cell, dtype):
    # What ENCODING_WORLD_AUTOCAST=bf16|fp16 rehearses: the CPU has no float16 LSTM kernel, so
    # CharRNN runs its recurrence in float32 there; the loss is float32 and finite either way.
    model = make(cell)
    x, y = torch.randint(40, (2, 6)), torch.randint(40, (2, 6))
    with torch.autocast("cpu", dtype=dtype):
        logits, loss = model(x, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
