"""Pick the torch device once; every function that computes takes it as an argument."""

from __future__ import annotations

import torch

_ALLOWED = ("auto", "cpu", "cuda")


def pick_device(name: str = "auto") -> torch.device:
    """Return the device called ``name``: "auto" (CUDA when present, else CPU), "cpu" or "cuda"."""
    if name not in _ALLOWED and not str(name).startswith("cuda:"):
        raise ValueError(f"device must be one of {_ALLOWED} or 'cuda:N', got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but CUDA is not available on this machine")
    return torch.device(name)
