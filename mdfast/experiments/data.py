"""Datasets the presets refer to by name: a learnable synthetic token source (tests, demo) and
token-id arrays saved on disk (``.pt`` / ``.npy`` of shape [N, L])."""

from __future__ import annotations

import os

import numpy as np
import torch

__all__ = ["load_tokens", "synthetic_text"]


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


def load_tokens(path: str) -> torch.Tensor:
    """Token ids [N, L] from ``.pt`` (a tensor or ``{"input_ids": tensor}``) or ``.npy``."""
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"mdfast: token file '{path}' not found (set data.path=...)")
    if path.endswith(".npy"):
        return torch.from_numpy(np.load(path).astype(np.int64))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        obj = obj["input_ids"]
    return obj.long()
