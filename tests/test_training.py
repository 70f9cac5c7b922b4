"""encoding_world.training: the training loop's pieces and checkpoints that survive crashes."""
import dataclasses
import math
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from encoding_world import set_seed
from encoding_world.training import CheckpointError, evaluate, fit, load_checkpoint, save_checkpoint, train_one_epoch

CPU = torch.device("cpu")


def make_data(n=96, seed=0):
    """Three linearly separable blobs in 4 dimensions."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    x = centres[y] + 0.5 * torch.randn(n, 4, generator=g)
    return x, y


def make_model(hidden=8):
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def loaders(batch_size=16, seed=0):
    x, y = make_data()
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    val = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=batch_size)
    return train, val


def trained(steps_epochs=3):
    """A model and an Adam optimizer with non-trivial state after a few epochs."""
    set_seed(0)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train, _ = loaders()
    for _ in range(steps_epochs):
        train_one_epoch(model, train, nn.CrossEntropyLoss(), optimizer, CPU)
    return model, optimizer


# ------------------------------------------------------------------- training loop

def test_train_one_epoch_equals_a_hand_written_loop():
    train, _ = loaders()
    set_seed(0)
    ours = make_model()
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    mean_loss = train_one_epoch(ours, train, nn.CrossEntropyLoss(), opt, CPU)

    train, _ = loaders()
    set_seed(0)
    ref = make_model()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    losses, sizes = [], []
    for xb, yb in train:
        loss = nn.functional.cross_entropy(ref(xb), yb)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        losses.append(loss.item())
        sizes.append(len(yb))
    expected = sum(loss * n for loss, n in zip(losses, sizes)) / sum(sizes)
    assert mean_loss == pytest.approx(expected, rel=1e-12)
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def test_mean_loss_weights_a_short_last_batch_by_its_size():
    x, y = make_data(n=10)
    model = make_model()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)      # batches of 4, 4, 2
    loss, acc = evaluate(model, loader, nn.CrossEntropyLoss(), CPU)
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_evaluate_changes_nothing_and_leaves_eval_mode():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, val = loaders()
    first = evaluate(model, val, nn.CrossEntropyLoss(), CPU)
    assert evaluate(model, val, nn.CrossEntropyLoss(), CPU) == first   # dropout is off
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_evaluate_accuracy_for_sequences():
    """[batch, seq_len, vocab] outputs against [batch, seq_len] targets: per-token accuracy."""
    targets = torch.tensor([[1, 2, 0], [2, 2, 1]])
    outputs = nn.functional.one_hot(torch.tensor([[1, 2, 2], [2, 0, 1]]), 3).float()
    loader = [(outputs, targets)]
    flat = lambda out, y: nn.functional.cross_entropy(out.flatten(0, 1), y.flatten())
    loss, acc = evaluate(nn.Identity(), loader, flat, CPU)
    assert acc == pytest.approx(4 / 6)
    assert loss == pytest.approx(flat(outputs, targets).item())


def test_fit_learns_and_records_history(capsys):
    set_seed(0)
    model = make_model()
    train, val = loaders()
    history = fit(model, train, val, nn.CrossEntropyLoss(),
                  torch.optim.Adam(model.parameters(), lr=0.05), CPU, epochs=10, log_every=5)
    assert [len(v) for v in history.values()] == [10, 10, 10]
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["val_acc"][-1] == 1.0
    assert capsys.readouterr().out.count("epoch") == 2


def test_grad_clip_limits_each_update():
    """Plain SGD with gradients clipped to norm c moves the parameters by at most lr * c."""
    set_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = make_data(n=16)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    train_one_epoch(model, [(x, y)], nn.CrossEntropyLoss(), opt, CPU, grad_clip=1e-3)
    moved = (torch.nn.utils.parameters_to_vector(model.parameters()) - before).norm().item()
    assert 0 < moved <= 1e-3 * (1 + 1e-4)


def test_evaluate_regression_has_loss_but_no_accuracy():
    x = torch.randn(8, 4)
    loader = [(x, x.sum(1, keepdim=True))]
    loss, acc = evaluate(nn.Linear(4, 1), loader, nn.MSELoss(), CPU)
    assert loss > 0 and math.isnan(acc)


def test_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="no batches"):
        evaluate(make_model(), [], nn.CrossEntropyLoss(), CPU)


# --------------------------------------------------------------------- checkpoints

def test_round_trip_restores_predictions_optimizer_and_extra(tmp_path):
    model, optimizer = trained()
    path = save_checkpoint(tmp_path / "ckpt.pt", model, optimizer, step=42,
                           config={"hidden": 8, "lr": 0.01}, best_val=0.25)
    x, _ = make_data()

    set_seed(1)                                  # a different initialisation
    fresh = make_model()
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.01)
    assert not torch.equal(fresh(x), model(x))
    info = load_checkpoint(path, fresh, fresh_opt)

    assert info == {"step": 42, "config": {"hidden": 8, "lr": 0.01}, "best_val": 0.25}
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    saved, loaded = optimizer.state_dict(), fresh_opt.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for i, state in saved["state"].items():
        for name, value in state.items():
            assert torch.equal(value, loaded["state"][i][name]), (i, name)


def test_resuming_equals_never_stopping(tmp_path):
    """Model + optimizer state is all Adam needs: 2 epochs, save, load, 2 more == 4 epochs."""
    x, y = make_data()
    batch = (x[:32], y[:32])

    def steps(model, opt, n):
        for _ in range(n):
            loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
            opt.zero_grad()
            loss.backward()
            opt.step()

    set_seed(0)
    straight = make_model()
    opt = torch.optim.Adam(straight.parameters(), lr=0.01)
    steps(straight, opt, 4)

    set_seed(0)
    first = make_model()
    opt = torch.optim.Adam(first.parameters(), lr=0.01)
    steps(first, opt, 2)
    save_checkpoint(tmp_path / "half.pt", first, opt, step=2)
    resumed = make_model()
    opt2 = torch.optim.Adam(resumed.parameters(), lr=0.01)
    assert load_checkpoint(tmp_path / "half.pt", resumed, opt2)["step"] == 2
    steps(resumed, opt2, 2)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nothing.pt.*save_checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt", make_model())


@pytest.mark.parametrize("keep", [0, 10, 0.5, -20])
def test_truncated_file_is_a_clear_error(tmp_path, keep):
    model, optimizer = trained(1)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, optimizer, step=1)
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated or corrupt.*earlier checkpoint"):
        load_checkpoint(path, make_model())


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pt").write_text("these are not weights")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "notes.pt", make_model())
    torch.save(make_model().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not written by save_checkpoint.*load_state_dict"):
        load_checkpoint(tmp_path / "bare.pt", make_model())


def test_mismatched_model_names_the_offending_keys(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", make_model(hidden=8), step=0, config={"hidden": 8})
    wider = make_model(hidden=16)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, wider)
    message = str(err.value)
    assert "'0.weight': checkpoint has [8, 4], model has [16, 4]" in message
    assert "'2.weight'" in message and "same configuration" in message
    assert "'hidden': 8" in message                           # what it was saved with
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())  # untouched

    deeper = nn.Sequential(*make_model(hidden=8), nn.ReLU(), nn.Linear(3, 3))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: '4.weight'"):
        load_checkpoint(path, deeper)
    info = load_checkpoint(path, deeper, strict=False)        # extra layers tolerated
    assert info["config"] == {"hidden": 8}
    assert torch.equal(deeper[0].weight, torch.load(path, weights_only=True)["model"]["0.weight"])


def test_mismatched_optimizer_is_a_clear_error_and_changes_nothing(tmp_path):
    model, optimizer = trained(1)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, optimizer)
    fresh = make_model()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match="another kind of optimizer"):
        load_checkpoint(path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(CheckpointError, match="parameter groups of sizes"):
        load_checkpoint(path, fresh, torch.optim.Adam(list(fresh.parameters())[:2]))
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    no_opt = save_checkpoint(tmp_path / "weights.pt", model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(no_opt, fresh, torch.optim.Adam(fresh.parameters()))


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    model, optimizer = trained(1)
    path = save_checkpoint(tmp_path / "run" / "ckpt.pt", model, optimizer, step=1)
    save_checkpoint(path, model, optimizer, step=2)            # overwrite in place
    assert os.listdir(tmp_path / "run") == ["ckpt.pt"]
    assert load_checkpoint(path, make_model())["step"] == 2


def test_a_crash_while_saving_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained(1)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, optimizer, step=1)
    good = path.read_bytes()

    def crash(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, optimizer, step=2)
    assert os.listdir(tmp_path) == ["ckpt.pt"]                 # no temporary file left
    assert path.read_bytes() == good                            # old checkpoint intact
    monkeypatch.undo()
    assert load_checkpoint(path, make_model())["step"] == 1


def test_extra_must_be_plain_data(tmp_path):
    @dataclasses.dataclass
    class Config:
        hidden: int = 8

    with pytest.raises(TypeError, match=r"extra field 'config' is a .*Config.*dataclasses.asdict"):
        save_checkpoint(tmp_path / "ckpt.pt", make_model(), config=Config())
    # A NumPy float passes isinstance(x, float) but weights_only loading refuses it.
    with pytest.raises(TypeError, match=r"extra field 'best'\['val'\] is a numpy.float64.*float\(x\)"):
        save_checkpoint(tmp_path / "ckpt.pt", make_model(), best={"val": np.float64(0.5)})
    assert not list(tmp_path.iterdir())
    plain = {"none": None, "flag": True, "n": 3, "x": 0.5, "s": "字", "t": (1, 2), "l": [1.0],
             "z": 1 + 2j, "b": b"raw", "set": {1, 2}, "size": torch.Size([2, 3]),
             "device": torch.device("cpu"), "int_keys": {1: "a", (2, 3): "b"},
             "tensor": torch.arange(3), "rng": torch.Generator().manual_seed(0).get_state(),
             "dtype": torch.float32, "nested": {"a": {"b": [1, 2]}}}
    save_checkpoint(tmp_path / "ckpt.pt", make_model(), config=dataclasses.asdict(Config()), **plain)
    info = load_checkpoint(tmp_path / "ckpt.pt", make_model())
    assert info["config"] == {"hidden": 8}
    assert torch.equal(info.pop("tensor"), plain.pop("tensor"))
    assert torch.equal(info.pop("rng"), plain.pop("rng"))
    assert {k: info[k] for k in plain} == plain


# Importing torch.compile's machinery makes torch itself warn about torch.jit; not ours.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_checkpoint_of_a_compiled_model_loads_into_a_plain_one(tmp_path):
    model, _ = trained(1)
    compiled = torch.compile(model)                             # lazy: nothing compiles here
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    path = save_checkpoint(tmp_path / "ckpt.pt", compiled)
    plain = make_model()
    load_checkpoint(path, plain)
    x, _ = make_data()
    with torch.no_grad():
        assert torch.equal(plain(x), model(x))
