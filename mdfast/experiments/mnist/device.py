"""Where the MNIST experiments run: the ``--device`` given, else CUDA when available, else CPU."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
