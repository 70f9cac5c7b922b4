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


def get_device(prefer: str | None = None):
    """The best device present: CUDA, then Apple's MPS, then the CPU.

    `prefer` forces one ("cpu", "cuda", "mps"), and so does the environment variable
    ENCODING_WORLD_DEVICE; asking for a device that is absent raises a clear error.
    """
    import torch

    choice = prefer or os.environ.get("ENCODING_WORLD_DEVICE")
    if choice:
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": torch.backends.mps.is_available()}
        if choice not in available:
            raise ValueError(f"unknown device {choice!r}: use one of {sorted(available)}")
        if not available[choice]:
            raise RuntimeError(f"device {choice!r} was asked for but is not available here; "
                               "unset ENCODING_WORLD_DEVICE to choose automatically")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
