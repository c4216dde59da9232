"""Fréchet distance between Gaussians fitted to feature sets: the math under FID and every
"classifier-Fréchet" score in mdfast.

For features with means μ_a, μ_b and covariances Σ_a, Σ_b,

    d² = |μ_a − μ_b|² + tr(Σ_a) + tr(Σ_b) − 2 tr((Σ_a^½ Σ_b Σ_a^½)^½),

computed in float64 with symmetric eigendecompositions: tr((Σ_a^½ Σ_b Σ_a^½)^½) is the sum of the
square roots of the (clamped non-negative) eigenvalues of the symmetric PSD matrix
Σ_a^½ Σ_b Σ_a^½, which equals tr((Σ_a Σ_b)^½) without the complex round-off of a general ``sqrtm``.
Covariances are unbiased (divide by n − 1), as in FID's reference implementations. Like FID the
estimate is biased upwards for finite n: compare scores computed with the same n.

:class:`GaussianStats` accumulates Σ f and Σ f fᵀ in float64 batch by batch (so 50k samples never
have to sit in memory), sums across ``torch.distributed`` ranks, and saves / loads itself as an
``.npz`` (``mu``, ``sigma``, ``n``, plus free-form metadata) so reference statistics are computed
once and cached.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["GaussianStats", "frechet_distance", "frechet_distance_features"]


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(
    mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor
) -> float:
    """d² between N(μ_a, Σ_a) and N(μ_b, Σ_b) (float64; see the module docstring)."""
    mu_a, mu_b = torch.as_tensor(mu_a).double(), torch.as_tensor(mu_b).double()
    cov_a, cov_b = torch.as_tensor(cov_a).double(), torch.as_tensor(cov_b).double()
    if mu_a.shape != mu_b.shape or mu_a.dim() != 1:
        raise ValueError(
            f"mdfast: frechet_distance needs two mean vectors of one size, got "
            f"{list(mu_a.shape)} and {list(mu_b.shape)}"
        )
    d = mu_a.shape[0]
    for name, c in (("cov_a", cov_a), ("cov_b", cov_b)):
        if c.shape != (d, d):
            raise ValueError(f"mdfast: argument '{name}' must be [{d}, {d}], got {list(c.shape)}")
    root_a = _sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    d2 = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(d2.item(), 0.0)


def frechet_distance_features(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (N ≥ 2 each)."""
    a, b = GaussianStats.of(feats_a), GaussianStats.of(feats_b)
    return a.frechet(b)


class GaussianStats:
    """Streaming mean and covariance of D-dimensional features, in float64.

    ``update(features)`` adds a batch [n, D]; ``mean`` / ``cov`` give μ and the unbiased Σ;
    ``frechet(other)`` the Fréchet distance; ``all_reduce()`` sums the accumulators over the ranks
    of the default process group (call it once, after every rank has added its shard);
    ``save(path)`` / ``load(path)`` an ``.npz`` cache with ``meta`` (a JSON-able dict that says what
    the statistics are of, checked by callers before reuse).
    """

    def __init__(self, dim: int, meta: dict | None = None):
        if dim < 1:
            raise ValueError(f"mdfast: GaussianStats needs dim >= 1, got {dim}")
        self.dim = dim
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)
        self.meta = dict(meta or {})

    @classmethod
    def of(cls, features: torch.Tensor, meta: dict | None = None) -> GaussianStats:
        if features.dim() != 2:
            raise ValueError(f"mdfast: features must be [N, D], got shape {list(features.shape)}")
        stats = cls(features.shape[1], meta)
        stats.update(features)
        return stats

    def update(self, features: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"mdfast: features must be [N, {self.dim}], got shape {list(features.shape)}"
            )
        f = features.detach().double()
        if self.sum.device != f.device:
            self.sum, self.outer = self.sum.to(f.device), self.outer.to(f.device)
        self.sum += f.sum(0)
        self.outer += f.T @ f
        self.n += f.shape[0]

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        n = torch.tensor([float(self.n)], dtype=torch.float64, device=self.sum.device)
        for t in (self.sum, self.outer, n):
            dist.all_reduce(t)
        self.n = int(n.item())

    @property
    def mean(self) -> torch.Tensor:
        self._check_n()
        return (self.sum / self.n).cpu()

    @property
    def cov(self) -> torch.Tensor:
        self._check_n()
        mu = self.sum / self.n
        return ((self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)).cpu()

    def _check_n(self) -> None:
        if self.n < 2:
            raise ValueError(f"mdfast: Fréchet statistics need at least 2 samples, got {self.n}")

    def frechet(self, other: GaussianStats) -> float:
        if other.dim != self.dim:
            raise ValueError(
                f"mdfast: cannot compare statistics of {self.dim}- and {other.dim}-dim features"
            )
        return frechet_distance(self.mean, self.cov, other.mean, other.cov)

    def save(self, path: str | os.PathLike) -> Path:
        """Atomic write of ``mu``, ``sigma``, ``n`` and ``meta`` to ``path`` (``.npz``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            mu=self.mean.numpy(),
            sigma=self.cov.numpy(),
            n=np.int64(self.n),
            meta=np.array(json.dumps(self.meta, sort_keys=True)),
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> GaussianStats:
        """Statistics saved by :meth:`save` (or any ``.npz`` with ``mu`` and ``sigma``, e.g. the
        reference files of pytorch-fid / torch-fidelity)."""
        with np.load(path, allow_pickle=False) as z:
            if "mu" not in z or "sigma" not in z:
                raise ValueError(f"mdfast: '{path}' has no 'mu' / 'sigma' arrays")
            mu, sigma = torch.from_numpy(z["mu"]).double(), torch.from_numpy(z["sigma"]).double()
            n = int(z["n"]) if "n" in z else 0
            meta = json.loads(str(z["meta"])) if "meta" in z else {}
        stats = cls(mu.shape[0], meta)
        # store the accumulators that reproduce (mu, sigma) exactly for n samples
        n_eff = max(n, 2)
        stats.n = n_eff
        stats.sum = mu * n_eff
        stats.outer = sigma * (n_eff - 1) + n_eff * torch.outer(mu, mu)
        return stats
