"""The reusable parts of a training script: one epoch of training, evaluation, checkpoints.

Who uses what. Lesson 2 writes the epoch loop (`train_one_epoch`, `evaluate`, `fit`) out by
hand and checks it against this module: the loop for a classifier over a data set, epoch
after epoch. The language models do not use it: they train step by step on random windows,
in `train.train_steps` (lessons 12, 15, 16, 18 and the training command). The checkpoint
functions serve everyone: lesson 2 introduces them, `train.run` saves and resumes runs
with them, `pretrained` and `lora` read the book's files through `read_checkpoint` /
`load_checkpoint`. The memory counters (`tensor_bytes`, `optimizer_state_bytes`) are
lesson 15's. The code is kept plain on purpose, in the spirit of nanoGPT: a loop you can
read top to bottom.

Conventions
-----------
* A data loader yields ``(inputs, targets)`` pairs of tensors.
* ``loss_fn(outputs, targets)`` returns the *mean* loss over the elements of ``targets``
  (the default of ``nn.CrossEntropyLoss``). For a language model whose outputs are
  ``[batch, seq_len, vocab]`` and targets ``[batch, seq_len]``, pass a function that
  flattens both, e.g. ``lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten())``.
* Mean losses over an epoch are weighted by ``targets.numel()``, so a short last batch
  counts for what it holds, and the result is the loss over the whole data set.

Checkpoints are written atomically (to a temporary file in the same folder, then
``os.replace``), so a crash while saving never leaves a half-written file under the real
name, and they are read with ``torch.load(weights_only=True)``, which refuses to run code
hidden in a file. Everything saved must therefore be tensors or plain Python data
(numbers, strings, lists, tuples, dicts): pass a config as ``dataclasses.asdict(config)``.
On reading, the CRC-32 that the zip format of ``torch.save`` stores for every entry is
checked too, so a byte changed on disk or in a copy is reported instead of loaded.
"""
from __future__ import annotations

import glob
import math
import os
import pickle
import re
import uuid
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

__all__ = [
    "CheckpointError", "train_one_epoch", "evaluate", "fit",
    "save_checkpoint", "load_checkpoint", "read_checkpoint", "write_atomically", "remove_leftover_temporaries",
]

CHECKPOINT_FORMAT = 1  # bumped if the layout of the saved dict ever changes


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used: corrupt, foreign, or for another model."""


# --------------------------------------------------------------------------- training

def train_one_epoch(model, loader, loss_fn, optimizer, device, grad_clip: float | None = None) -> float:
    """Train `model` for one pass over `loader`; return the mean training loss.

    Each batch: forward pass, loss, ``zero_grad``, ``backward``, (optional gradient-norm
    clipping), ``step``. The loss is averaged over all target elements seen.
    """
    model.train()
    total, count = 0.0, 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        outputs = model(inputs)                    # forward pass
        loss = loss_fn(outputs, targets)
        optimizer.zero_grad(set_to_none=True)      # forget the previous batch's gradients
        loss.backward()                            # backward pass: fill every .grad
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()                           # move the parameters downhill
        n = targets.numel()
        total += loss.item() * n
        count += n
    if count == 0:
        raise ValueError("the loader yielded no batches: is the data set empty?")
    return total / count


@torch.no_grad()
def evaluate(model, loader, loss_fn, device) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on `loader`, without changing the model.

    Accuracy is the share of target elements equal to ``outputs.argmax(-1)``; it is NaN
    when the targets are not class indices (e.g. a regression).
    """
    model.eval()
    total, correct, count = 0.0, 0, 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        outputs = model(inputs)
        n = targets.numel()
        total += loss_fn(outputs, targets).item() * n
        if not targets.is_floating_point() and outputs.shape[:-1] == targets.shape:
            correct += (outputs.argmax(-1) == targets).sum().item()
        else:
            correct = math.nan
        count += n
    if count == 0:
        raise ValueError("the loader yielded no batches: is the data set empty?")
    return total / count, correct / count


def fit(model, train_loader, val_loader, loss_fn, optimizer, device, epochs: int,
        grad_clip: float | None = None, log_every: int = 0) -> dict[str, list[float]]:
    """Train for `epochs` epochs, evaluating on `val_loader` after each one.

    Returns the history ``{"train_loss": [...], "val_loss": [...], "val_acc": [...]}``,
    one entry per epoch. With ``log_every=k`` it prints a line every k epochs.
    """
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_acc": []}
    for epoch in range(1, epochs + 1):
        train_loss = train_one_epoch(model, train_loader, loss_fn, optimizer, device, grad_clip)
        val_loss, val_acc = evaluate(model, val_loader, loss_fn, device)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["val_acc"].append(val_acc)
        if log_every and (epoch % log_every == 0 or epoch == epochs):
            print(f"epoch {epoch:3d}  train loss {train_loss:.4f}  "
                  f"val loss {val_loss:.4f}  val acc {val_acc:.4f}")
    return history


# --------------------------------------------------------------------------- memory

def tensor_bytes(tensors) -> int:
    """Bytes that some tensors take (numel × element size, summed)."""
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of an optimizer's state: for AdamW, exp_avg and exp_avg_sq (two numbers per
    trained parameter) and a step counter per tensor (lesson 15)."""
    return sum(tensor_bytes(v for v in state.values() if torch.is_tensor(v)) for state in optimizer.state.values())


# ------------------------------------------------------------------------ checkpoints

def _unwrap(model):
    """The module itself when `model` was wrapped by ``torch.compile`` or by
    DistributedDataParallel, in either order (its keys lack their ``_orig_mod.`` and
    ``module.`` prefixes, so a checkpoint loads into compiled, distributed and plain models alike)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


# What torch.load(weights_only=True) reads back. Types are matched exactly: a NumPy
# float64 is a subclass of float but is refused, and so is a namedtuple.
_PLAIN_TYPES = {type(None), bool, int, float, complex, str, bytes,
                torch.Size, torch.dtype, torch.device}


def _check_plain(value, where: str) -> None:
    """Raise TypeError if `value` holds anything ``torch.load(weights_only=True)`` refuses."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN_TYPES:
        return
    if type(value) in (list, tuple, set):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            _check_plain(key, f"{where} key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if hasattr(value, "__dataclass_fields__"):
        hint = " (pass dataclasses.asdict(...))"
    elif hasattr(value, "_get_kwargs"):          # an argparse.Namespace
        hint = " (pass vars(...))"
    elif hasattr(value, "item") and hasattr(value, "dtype"):   # a NumPy number or array
        hint = " (convert it: float(x), x.tolist() or torch.from_numpy(x))"
    else:
        hint = ""
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}, which "
        f"torch.load(weights_only=True) will refuse to read back; save tensors, numbers, "
        f"strings, lists, tuples or dicts instead{hint}")


def write_atomically(path, write) -> Path:
    """Call ``write(f)`` on a new temporary file beside `path`, flush it to disk, then move
    it over `path` with ``os.replace``: readers see the old file or the new one, never half
    of one. On any error (or Ctrl-C) the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_leftover_temporaries(path) -> list[Path]:
    """Delete the temporary files that killed writes of `path` left beside it (a process
    killed with SIGKILL in the middle of `write_atomically` cannot clean up); return them."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{32}}\.tmp")   # write_atomically's names
    leftovers = sorted(p for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp") if pattern.fullmatch(p.name))
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


def save_checkpoint(path, model, optimizer=None, step: int = 0, **extra) -> Path:
    """Save the model's weights, the optimizer's state, the step and any `extra` data.

    The file appears under `path` only once it is complete: it is written to a temporary
    file in the same folder (same file system, so the rename is atomic) and then moved
    over `path` with ``os.replace``. Returns the path written.
    """
    for key, value in extra.items():
        _check_plain(value, f"extra field {key!r}")
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": _unwrap(model).state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "step": int(step),
        "extra": dict(extra),
    }
    return write_atomically(path, lambda f: torch.save(state, f))


def _describe_mismatch(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between a saved state dict and the model's own."""
    problems = []
    for key in current:
        if key not in saved:
            problems.append(f"missing from the checkpoint: {key!r}")
        elif getattr(saved[key], "shape", None) != getattr(current[key], "shape", None):
            problems.append(f"shape of {key!r}: checkpoint has {list(saved[key].shape)}, "
                            f"model has {list(current[key].shape)}")
    problems += [f"in the checkpoint but not in the model: {key!r}" for key in saved if key not in current]
    return problems


# The first bytes of the two formats torch.save has written: a zip archive (PyTorch 1.6 and
# later, and what save_checkpoint writes) and the older pickle-based one.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def read_checkpoint(path, map_location="cpu") -> dict:
    """The dict a checkpoint file holds, read safely and checked: ``{"format", "model",
    "optimizer", "step", "extra"}``.

    Raises FileNotFoundError for a missing file, and CheckpointError, saying what to do, for
    a folder, a file that is truncated or corrupt (every zip entry's CRC-32 is checked), one
    in PyTorch's old format, one holding Python objects, or one not written by
    `save_checkpoint`. Nothing in the file is ever run (``weights_only=True``).
    """
    path = Path(path)
    if path.is_dir():
        inside = path / "checkpoint.pt"
        raise CheckpointError(f"{path} is a folder, not a checkpoint file: " + (
            f"give the path of the checkpoint inside it, {inside}" if inside.is_file() else
            "give the path of a checkpoint file (if the folder is in the way, move it elsewhere)"))
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: check the path, or train the model and save one "
            f"with save_checkpoint() first")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head == _LEGACY_MAGIC:
        raise CheckpointError(f"{path} is in PyTorch's old (pre-1.6) file format, not written by "
                              f"save_checkpoint: read it with torch.load(path, weights_only=True) and save "
                              f"it again with save_checkpoint()")
    if not head.startswith(_ZIP_MAGIC):
        reason = "the file is empty" if not head else "it does not begin like a zip archive, the format torch.save writes"
        raise CheckpointError(_corrupt_message(path, reason))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found and _damaged_entry(path) is None:
            raise CheckpointError(
                f"{path} holds a Python object of class {found.group(1)}, not only tensors and plain data, "
                f"and torch.load(weights_only=True) refuses to run the code that would rebuild it. Save "
                f"plain data instead (e.g. dataclasses.asdict(config)); only if you trust the file, read it "
                f"with torch.load(path, weights_only=False) and save it again with save_checkpoint().") from err
        raise CheckpointError(_corrupt_message(path, _reason(err))) from err
    except Exception as err:  # zip reader errors (RuntimeError), EOFError, ...
        raise CheckpointError(_corrupt_message(path, _reason(err))) from err
    damaged = _damaged_entry(path)
    if damaged is not None:
        raise CheckpointError(_corrupt_message(path, f"its entry {damaged} fails its CRC-32 check",
                                               how="damaged on disk or in a copy"))

    if not (isinstance(state, dict) and "model" in state and "format" in state):
        keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} was not written by save_checkpoint (it holds {keys}). If it is a bare "
            f"state dict, use model.load_state_dict(torch.load(path, weights_only=True)).")
    if state["format"] > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']}, newer than this "
                              f"code understands ({CHECKPOINT_FORMAT}): update encoding_world")
    return state


def _damaged_entry(path: Path) -> str | None:
    """The name of the first zip entry whose data fails its CRC-32 check, or None.

    torch.load does not check these checksums; Python's zipfile does, at the cost of one
    more read of the file (about as fast as the disk's cache: see tests/test_faults.py)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"(the archive itself: {err})"


def load_checkpoint(path, model, optimizer=None, map_location="cpu", strict: bool = True) -> dict:
    """Load a checkpoint written by `save_checkpoint` into `model` (and `optimizer`).

    Returns ``{"step": step, **extra}``. Raises FileNotFoundError for a missing file and
    CheckpointError, with what to do next, for a file that is truncated or corrupt, was
    not written by `save_checkpoint`, or does not fit the model (the message names every
    offending key). With ``strict=False`` keys missing on either side are tolerated (e.g.
    loading base weights into a model with extra adapter layers); shapes must still agree.
    """
    path = Path(path)
    state = read_checkpoint(path, map_location)
    target = _unwrap(model)
    problems = _describe_mismatch(state["model"], target.state_dict())
    if not strict:
        problems = [p for p in problems if p.startswith("shape of")]
    if problems:
        extra = state.get("extra") or {}
        saved_with = f" It was saved with: {extra}." if extra and len(repr(extra)) < 300 else ""
        raise CheckpointError(
            f"{path} does not fit this model:\n  - " + "\n  - ".join(problems) +
            f"\nBuild the model with the same configuration as when the checkpoint was saved."
            f"{saved_with}")
    if optimizer is not None:
        _check_optimizer(path, state["optimizer"], optimizer)

    # Everything checked: only now change the model and the optimizer.
    target.load_state_dict(state["model"], strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return {"step": state["step"], **state["extra"]}


def _check_optimizer(path: Path, saved, optimizer) -> None:
    """Raise CheckpointError unless the saved optimizer state fits `optimizer`."""
    if saved is None:
        raise CheckpointError(f"{path} holds no optimizer state (it was saved with "
                              f"optimizer=None): call load_checkpoint without an optimizer")
    saved_groups, own_groups = saved["param_groups"], optimizer.state_dict()["param_groups"]
    # Settings names tell optimizers apart (SGD has "momentum", Adam "betas"); newer
    # PyTorch versions only add names, so one set containing the other is fine.
    saved_keys, own_keys = set(saved_groups[0]), set(own_groups[0])
    if not (saved_keys <= own_keys or own_keys <= saved_keys):
        raise CheckpointError(
            f"{path}: the saved optimizer state is for another kind of optimizer (settings "
            f"{sorted(saved_keys - own_keys)} are not those of the {type(optimizer).__name__} "
            f"given); create the same optimizer as when saving, or load without an optimizer "
            f"to start a fresh one")
    saved_sizes = [len(g["params"]) for g in saved_groups]
    own_sizes = [len(g["params"]) for g in own_groups]
    if saved_sizes != own_sizes:
        raise CheckpointError(
            f"{path}: the saved optimizer state covers parameter groups of sizes {saved_sizes}, "
            f"this optimizer has {own_sizes}; create the optimizer over the same parameters "
            f"as when saving, or load without an optimizer to start a fresh one")


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).split('. ')[0].strip() or 'unexpected end of file'}"


def _corrupt_message(path: Path, reason: str, how: str = "cut off while being written or copied") -> str:
    return (f"{path} is not a readable checkpoint: it is truncated or corrupt "
            f"({path.stat().st_size} bytes; {reason}). It was probably {how}: "
            f"copy it again, or delete it and load an earlier checkpoint.")
