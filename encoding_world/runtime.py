"""Seeds and devices: the two things every lesson sets before it computes anything."""
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
