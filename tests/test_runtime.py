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


def test_autocast_precision_by_device_and_switch(monkeypatch):
    monkeypatch.delenv("ENCODING_WORLD_AUTOCAST", raising=False)
    assert ew.runtime.autocast_dtype("cpu") is None and ew.runtime.autocast_dtype("mps") is None
    # CUDA: bf16 only where the GPU has it natively (compute capability 8.0+), else float16.
    for native, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n)
        assert ew.runtime.autocast_dtype("cuda") == expected
    for value, expected in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("off", None), (" BF16 ", torch.bfloat16)):
        monkeypatch.setenv("ENCODING_WORLD_AUTOCAST", value)
        assert ew.runtime.autocast_dtype("cpu") == expected == ew.runtime.autocast_dtype("cuda")
    monkeypatch.setenv("ENCODING_WORLD_AUTOCAST", "fp8")
    with pytest.raises(ValueError, match="ENCODING_WORLD_AUTOCAST='fp8'.*bf16, fp16, off"):
        ew.runtime.autocast_dtype("cpu")


def test_autocast_context_and_scaler_follow_the_precision(monkeypatch):
    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    for value, dtype, scaled in (("off", torch.float32, False), ("bf16", torch.bfloat16, False),
                                 ("fp16", torch.float16, True)):
        monkeypatch.setenv("ENCODING_WORLD_AUTOCAST", value)
        with ew.runtime.autocast("cpu"):
            assert layer(x).dtype == dtype
        assert ew.runtime.grad_scaler("cpu").is_enabled() == scaled


def test_precision_follows_the_gpus_native_support(monkeypatch):
    # Faked GPUs: an A100 or H100 (compute capability 8.0+) computes bf16 natively; a T4 (7.5)
    # reports bf16 as supported only through emulation, which is slow, so it trains in float16.
    monkeypatch.delenv("ENCODING_WORLD_AUTOCAST", raising=False)
    gpus = {"A100 (8.0)": (True, True), "T4 (7.5)": (False, True), "P100 (6.0)": (False, False)}
    for name, (native, emulated) in gpus.items():
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True, n=native, e=emulated: e if including_emulation else n)
        expected = torch.bfloat16 if native else torch.float16
        assert ew.runtime.autocast_dtype("cuda") == expected, name
        assert ew.runtime.autocast_dtype(torch.device("cuda", 1)) == expected, name
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert ew.runtime.autocast_dtype("mps") is None
