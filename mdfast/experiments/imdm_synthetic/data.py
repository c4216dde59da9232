"""IMDM's ``SyntheticAlign`` task: every sequence is one random token repeated ``length`` times.

A model that samples its positions independently in one step (MDLM, whose all-mask denoiser
can only output the uniform marginal) produces an all-equal sequence with probability
V^−(L−1); a one-step sampler needs the positions to be decided jointly, which IMDM's ε allows.
"""

from __future__ import annotations

import torch

__all__ = ["synthetic_align"]


def synthetic_align(n: int, length: int = 10, vocab: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` sequences [n, length]: token ~ U{0..vocab−1}, repeated (a fixed draw per seed)."""
    if n < 1 or length < 1 or vocab < 2:
        raise ValueError(
            f"mdfast: data.n, data.length must be >= 1 and data.vocab >= 2, got {n}, {length}, "
            f"{vocab}"
        )
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, 1), generator=g).repeat(1, length)
