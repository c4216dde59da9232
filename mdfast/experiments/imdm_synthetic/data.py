"""IMDM's ``SyntheticAlign`` task: every sequence is one random token repeated ``length`` times.

A model that samples its positions independently in one step (MDLM, whose all-mask denoiser
can only output the uniform marginal) produces an all-equal sequence with probability
V^−(L−1); a one-step sampler needs the positions to be decided jointly, which IMDM's ε allows.
"""

from __future__ import annotations

import torch

from mdfast import ops
from mdfast.rng import stream_seed

__all__ = ["synthetic_align"]


def synthetic_align(n: int, length: int = 10, vocab: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` sequences [n, length]: token ~ U{0..vocab−1}, repeated; row i's token is element i of
    the Philox stream ``stream_seed(seed, "synthetic-align")`` (a fixed draw per seed)."""
    if n < 1 or length < 1 or vocab < 2:
        raise ValueError(
            f"mdfast: data.n, data.length must be >= 1 and data.vocab >= 2, got {n}, {length}, "
            f"{vocab}"
        )
    u = ops.uniform((n,), stream_seed(seed, "synthetic-align"), 0)
    token = (u * vocab).floor().to(torch.int64).clamp_(0, vocab - 1)
    return token[:, None].repeat(1, length)
