"""Datasets the presets refer to by name: a learnable synthetic token source (tests, demo) and
token-id arrays saved on disk (``.pt`` / ``.npy`` of shape [N, L])."""

from __future__ import annotations

import os

import numpy as np
import torch

__all__ = ["load_tokens", "synthetic_grid", "synthetic_text"]


def synthetic_text(
    n: int = 512, length: int = 32, vocab: int = 32, seed: int = 0, temperature: float = 0.3
) -> torch.Tensor:
    """``n`` sequences of an order-1 Markov chain over ``vocab`` tokens with peaked transitions
    (a fixed random chain per ``seed``): structured enough that every objective can learn it."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(vocab, vocab, generator=g) / temperature
    trans = logits.softmax(-1)
    x = torch.empty(n, length, dtype=torch.int64)
    x[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for i in range(1, length):
        x[:, i] = torch.multinomial(trans[x[:, i - 1]], 1, generator=g).squeeze(-1)
    return x


def synthetic_grid(
    n: int = 256, size: int = 8, vocab: int = 8, classes: int = 4, seed: int = 0, noise: float = 0.1
) -> dict:
    """Class-conditional token grids: class k has a fixed random template of ``size × size``
    tokens; a sample is its class template with a fraction ``noise`` of cells redrawn.
    Returns ``{"input_ids": [n, size, size], "label": [n]}``."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randint(0, vocab, (classes, size, size), generator=g)
    label = torch.randint(0, classes, (n,), generator=g)
    x = templates[label]
    redraw = torch.rand(x.shape, generator=g) < noise
    x = torch.where(redraw, torch.randint(0, vocab, x.shape, generator=g), x)
    return {"input_ids": x, "label": label}


def load_tokens(path: str):
    """Token ids from ``.npy`` ([N, ...]) or ``.pt``: a tensor, or a dict with ``"input_ids"``
    (and optionally ``"label"``, kept: the dataset is then that dict)."""
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"mdfast: token file '{path}' not found (set data.path=...)")
    if path.endswith(".npy"):
        return torch.from_numpy(np.load(path).astype(np.int64))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        out = {"input_ids": obj["input_ids"].long()}
        if "label" in obj:
            out["label"] = obj["label"].long()
        return out
    return obj.long()
