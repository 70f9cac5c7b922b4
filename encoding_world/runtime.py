"""Seeds, devices and precision: what every lesson sets before it computes anything."""
import os
import random

import numpy as np


def set_seed(seed: int = 0, deterministic: bool = True) -> None:
    """Seed Python, NumPy and (if installed) PyTorch; on request make PyTorch deterministic.

    Deterministic mode makes a CPU run repeat bit for bit, which is what lets the book
    store a notebook's outputs and check them again later.
    """
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this set before its first call to be deterministic on a GPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


class DeviceUnavailableError(RuntimeError):
    """A device was asked for by name but this machine does not have it."""


def get_device(prefer=None):
    """The best device present: CUDA, then Apple's MPS, then the CPU.

    `prefer` forces one ("cpu", "cuda", "cuda:1", "mps", or a torch.device), and so does
    the environment variable ENCODING_WORLD_DEVICE; asking for a device that is absent
    raises a clear error.
    """
    import torch

    source = "" if prefer is not None else " by ENCODING_WORLD_DEVICE"
    choice = str(prefer) if prefer is not None else os.environ.get("ENCODING_WORLD_DEVICE")
    if choice:
        kind, _, index = choice.partition(":")
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": torch.backends.mps.is_available()}
        if kind not in available or (index and not index.isdigit()):
            raise ValueError(f"unknown device {choice!r}{source}: use one of {sorted(available)}")
        if not available[kind]:
            raise DeviceUnavailableError(f"device {choice!r} was asked for{source} but is not available here: "
                                         f"use 'cpu', or ask for no device (unset ENCODING_WORLD_DEVICE, leave out "
                               f"--device) to choose automatically")
        if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"device {choice!r} was asked for{source} but is not available here: "
                                         f"this machine has {torch.cuda.device_count()} CUDA device(s), "
                               f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# Set to bf16 or fp16 to run every autocast region in that precision on any device, the CPU
# included, so that a GPU's rounding can be rehearsed on a laptop; "off" keeps float32 everywhere.
AUTOCAST_ENV = "ENCODING_WORLD_AUTOCAST"
_AUTOCAST_CHOICES = {"bf16": "bfloat16", "fp16": "float16", "off": None}


def autocast_dtype(device):
    """The reduced precision the model is trained in on `device`, or None for float32.

    CUDA: bfloat16 where the GPU computes it natively (compute capability 8.0 and newer:
    A100, H100, RTX 30xx and later), float16 on older GPUs (Colab's T4), which then needs a
    gradient scaler (`grad_scaler`). The CPU and Apple's MPS: float32. The environment
    variable ENCODING_WORLD_AUTOCAST (bf16, fp16 or off) overrides this on every device.
    """
    import torch

    device = torch.device(device)
    choice = os.environ.get(AUTOCAST_ENV, "").strip().lower()
    if choice:
        if choice not in _AUTOCAST_CHOICES:
            raise ValueError(f"{AUTOCAST_ENV}={choice!r}: use one of {', '.join(_AUTOCAST_CHOICES)} "
                             f"(or unset it to choose by device)")
        name = _AUTOCAST_CHOICES[choice]
        return None if name is None else getattr(torch, name)
    if device.type == "cuda":
        # Native bf16 (no emulation): compute capability 8.0+, or an AMD GPU under ROCm.
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return None


def autocast(device):
    """The context that runs a forward pass in `autocast_dtype(device)` (a no-op for float32)."""
    import torch

    device = torch.device(device)
    dtype = autocast_dtype(device)
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device):
    """A gradient scaler, enabled only where training runs in float16.

    float16 cannot hold gradients below about 6e-8 (they become zero) or above 65504 (they
    become infinite); the scaler multiplies the loss before `backward` and divides the
    gradients again before the optimizer's step, skipping a step whose gradients overflowed.
    bfloat16 has float32's range and needs none.
    """
    import torch

    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)


def matmul_peak_flops(device, repeats: int = 5) -> float:
    """The best FLOP/s of one n × n matrix multiply on `device`, the denominator of MFU on a
    machine with no published peak: float32 2048 × 2048 on the CPU, bf16 8192 × 8192 on a GPU
    (what training multiplies in there). Lesson 12 writes it out."""
    import time

    import torch

    device = torch.device(device)
    n, dtype = (2048, torch.float32) if device.type == "cpu" else (8192, torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = {"cuda": torch.cuda.synchronize, "mps": torch.mps.synchronize}.get(device.type, lambda: None)
    best = 0.0
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
    return best
