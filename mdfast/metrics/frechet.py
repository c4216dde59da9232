"""Fréchet distance between Gaussians fitted to two feature sets (as in FID):

    d² = |μ_a − μ_b|² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½),

computed in float64 with symmetric eigendecompositions (no scipy). Like FID it is biased upwards
for finite samples: compare scores computed with the same number of samples. The features come
from the caller (e.g. the digit classifier of :mod:`mdfast.experiments.mnist.frechet`).
"""

from __future__ import annotations

import torch

__all__ = ["frechet_distance"]


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (N ≥ 2 each)."""
    if feats_a.shape[0] < 2 or feats_b.shape[0] < 2:
        raise ValueError("mdfast: frechet_distance needs at least 2 samples in each set")
    a, b = feats_a.double(), feats_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    d2 = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(d2.item(), 0.0)
