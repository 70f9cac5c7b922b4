import random

import numpy as np
import pytest
import torch

import encoding_world as ew


def draw():
    return random.random(), np.random.rand(), torch.rand(1).item()


def test_set_seed_repeats_every_generator():
    ew.set_seed(123)
    first = draw()
    ew.set_seed(123)
    assert draw() == first
    ew.set_seed(124)
    assert draw() != first


def test_get_device_on_this_machine_and_forced(monkeypatch):
    monkeypatch.delenv("ENCODING_WORLD_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert ew.get_device().type == expected
    assert ew.get_device("cpu").type == "cpu"
    monkeypatch.setenv("ENCODING_WORLD_DEVICE", "cpu")
    assert ew.get_device().type == "cpu"


def test_get_device_rejects_unknown_or_absent(monkeypatch):
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        ew.get_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="not available here"):
        ew.get_device("cuda")
