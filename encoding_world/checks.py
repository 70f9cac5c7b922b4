"""Checks of what the package's functions and commands are given, with one-line errors.

Every check raises an error whose message names the argument, what it got (a value, or a
tensor's dtype and shape) and what was expected, in the style of attention.py's mask
check: ``top_p must be a number in (0, 1], got 1.5``. The package uses these helpers
rather than writing the same test twice in two wordings.

* ``check_int``, ``check_number``: a count or a setting within a range (NaN is refused).
* ``check_tensor``: a tensor of the expected number of dimensions.
* ``check_ids``: token ids, integers inside the vocabulary.
* ``check_finite``: no NaN or infinite entry in a tensor (weights, an adapter).
* ``check_logits``: logits a token can be drawn from (no NaN, no +inf, not all −inf).
* ``check_output_folder``: a folder that can be written to, checked before hours of work.

``show_error`` is how the lessons show these messages: it calls a function that should fail
and prints the error (lesson 2 writes it out).
"""
from __future__ import annotations

import errno
import math
import numbers
import os
import shutil
import uuid
from pathlib import Path

import torch

__all__ = ["show", "show_error", "check_int", "check_number", "check_tensor", "check_ids", "check_lm_inputs",
           "check_finite",
           "check_logits", "check_output_folder"]


def show(value) -> str:
    """How a value appears in a message: a tensor by its dtype and shape, the rest by repr."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def show_error(call, expected=Exception, replace: dict[str, str] | None = None) -> Exception:
    """Call `call()`, which must raise `expected`; print "ErrorType: message" (with each key of
    `replace` written as its value, e.g. a temporary folder as <folder>) and return the error.
    An AssertionError if it raises nothing."""
    try:
        call()
    except expected as err:
        message = str(err)
        for old, new in (replace or {}).items():
            message = message.replace(old, new)
        print(f"{type(err).__name__}: {message}")
        return err
    raise AssertionError(f"expected {getattr(expected, '__name__', expected)}, but nothing was raised")


def _interval(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int; TypeError unless it is an integer, ValueError outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {show(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {_interval(low, high)}, got {value}")
    return int(value)


def check_number(name: str, value, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float; it must be finite and lie in the interval (open ends excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {show(value)}")
    value = float(value)
    inside = math.isfinite(value)
    if inside and low is not None:
        inside = value > low if low_open else value >= low
    if inside and high is not None:
        inside = value < high if high_open else value <= high
    if not inside:
        where = _interval(low, high, low_open, high_open)
        raise ValueError(f"{name} must be a finite number{' ' + where if where else ''}, got {value}")
    return value


def check_tensor(name: str, value, dims: int | None = None, min_dims: int | None = None) -> torch.Tensor:
    """`value` must be a tensor with exactly `dims` (or at least `min_dims`) dimensions."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {show(value)}")
    if dims is not None and value.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got {show(value)}")
    if min_dims is not None and value.dim() < min_dims:
        raise ValueError(f"{name} must have at least {min_dims} dimensions, got {show(value)}")
    return value


IGNORE_INDEX = -100   # a target that counts for nothing in the loss (F.cross_entropy's default)


def check_ids(name: str, ids, vocab_size: int, layout: str = "[batch, len]", ignore: int | None = None) -> torch.Tensor:
    """Token ids: an integer tensor laid out as `layout` ("[batch, len]", or "" for any
    shape), every id in 0 … vocab_size − 1, or equal to `ignore` if given (a target that
    counts for nothing in the loss). The check reads the tensor's min and max only."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of token ids {layout}, got {show(ids)}".replace("  ", " "))
    if layout and ids.dim() != layout.count(",") + 1:
        raise ValueError(f"{name} must be {layout} token ids, got {show(ids)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids (torch.long), got {show(ids)}")
    if ids.numel():
        checked = ids if ignore is None else ids.masked_fill(ids == ignore, 0)
        low, high = torch.stack(torch.aminmax(checked)).tolist()     # one read back from a GPU
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            allowed = "" if ignore is None else f" (or {ignore}, ignored)"
            raise ValueError(f"{name} holds the id {bad}, outside the vocabulary 0..{vocab_size - 1}{allowed}")
    return ids



def check_lm_inputs(token_ids, targets, vocab_size: int) -> None:
    """What every language model of the book (GPT, LlamaGPT, CharRNN) checks first: token_ids
    [batch, len] inside the vocabulary, and targets, if given, alike (or IGNORE_INDEX, which
    their cross-entropy skips) and of the same shape."""
    check_ids("token_ids", token_ids, vocab_size)
    if targets is not None:
        check_ids("targets", targets, vocab_size, ignore=IGNORE_INDEX)
        if targets.shape != token_ids.shape:
            raise ValueError(f"targets must have the shape of token_ids {list(token_ids.shape)}, "
                             f"got {list(targets.shape)}")


def check_finite(name: str, tensor: torch.Tensor, remedy: str = "") -> None:
    """ValueError if `tensor` holds NaN or ±inf, saying how many, where the first one is,
    and `remedy` (what to do about it)."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    bad = ~torch.isfinite(tensor)
    if bad.any():
        first = [int(i) for i in bad.nonzero()[0]]
        kinds = " and ".join(k for k, found in (("NaN", tensor.isnan().any()), ("infinite", tensor.isinf().any()))
                             if found)
        raise ValueError(f"{name} holds {int(bad.sum())} {kinds} value(s) (the first at index {first}) "
                         f"in {show(tensor)}" + (f": {remedy}" if remedy else ""))


def check_logits(logits: torch.Tensor) -> None:
    """ValueError unless every row of `logits` [..., vocab] can be sampled from: −inf marks a
    token filtered out, but NaN or +inf (a model whose numbers overflowed, or NaN weights)
    would make softmax return NaN, and argmax pick the NaN as if it were the best token."""
    remedy = ("the model's output is not a number: check its weights and inputs for NaN or overflow "
              "(load_pretrained() checks the book's model)")
    check_finite("logits", torch.where(logits == float("-inf"), 0.0, logits), remedy)
    dead = (logits == float("-inf")).all(dim=-1)
    if dead.any():
        row = [int(i) for i in dead.nonzero()[0]]
        raise ValueError(f"logits of row {row} are all -inf: every token was filtered out, so none can be chosen")


def check_output_folder(folder, option: str = "--out", need_bytes: int = 0) -> Path:
    """Make sure `folder` is, or can become, a folder this process can write to, with at
    least `need_bytes` free; create it. Raises NotADirectoryError, PermissionError or
    OSError(ENOSPC) with a message naming `option`, before any work is spent.

    The test is a real one: a small file is written, flushed to disk and removed (a
    read-only file system, a folder without write permission or a full disk all fail it,
    also for root, who may write where permissions say no).
    """
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "" if parent == folder else ", on its path,"
                raise NotADirectoryError(f"{option} {folder} is not a folder: {parent}{where} is a file; "
                                         f"choose another {option}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{uuid.uuid4().hex}.tmp"
        try:
            with open(probe, "xb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        remedy = "free some space on its disk, or choose" if err.errno == errno.ENOSPC else "choose"
        raise type(err)(f"{option} {folder} cannot be written to ({reason}): {remedy} another {option}, "
                        f"one you can write to") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OSError(f"{option} {folder}: only {free / 1e6:.1f} MB are free on its disk and this needs about "
                      f"{need_bytes / 1e6:.1f} MB: free some space, or choose another {option}")
    return folder
