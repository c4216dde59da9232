"""A k-means codebook: turn continuous values (grey levels, colours, features) into token ids.

:func:`fit_kmeans` runs Lloyd's algorithm from a k-means++ start (seeded, so the same data and
seed give the same codebook): assign every point to its nearest centroid, move each centroid to
the mean of its points, until no assignment changes (or ``iters``); an empty cluster is restarted
at the point farthest from its centroid. It works on the distinct points weighted by their
multiplicity (the same result as on every point; 8-bit grey levels have at most 256·k distinct
values however many pixels there are). Centroids are returned sorted by their first coordinate,
so for scalar data code 0 is the darkest level. :func:`assign` maps points to codes,
:func:`decode` codes back to centroids.
"""

from __future__ import annotations

import torch

__all__ = ["assign", "decode", "fit_kmeans"]


def _as_points(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() not in (1, 2):
        raise ValueError(f"mdfast: k-means points must be [N] or [N, D], got {list(x.shape)}")
    return x.reshape(-1, 1).double() if x.dim() == 1 else x.double()


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """int64 codes of the points ``x`` ([N] scalars or [N, D] vectors): the nearest centroid."""
    pts, c = _as_points(x), torch.as_tensor(centroids).double().reshape(centroids.shape[0], -1)
    out = torch.empty(pts.shape[0], dtype=torch.int64)
    for start in range(0, pts.shape[0], chunk):
        out[start : start + chunk] = torch.cdist(pts[start : start + chunk], c).argmin(1)
    return out


def decode(codes: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Centroid values of ``codes`` (shape ``codes.shape`` for scalar centroids, else + [D])."""
    c = torch.as_tensor(centroids)
    out = c[codes.long()]
    return out.squeeze(-1) if c.dim() == 2 and c.shape[1] == 1 else out


def fit_kmeans(x: torch.Tensor, k: int, *, iters: int = 100, seed: int = 0) -> torch.Tensor:
    """Centroids float64 [k] (points [N]) or [k, D] (points [N, D]) of ``x`` (module
    docstring)."""
    scalar = torch.as_tensor(x).dim() == 1
    pts = _as_points(x)
    if pts.shape[1] == 1:  # unique of a flat tensor: much faster than unique(dim=0)
        pts, weight = torch.unique(pts.flatten(), return_counts=True)
        pts = pts[:, None]
    else:
        pts, weight = torch.unique(pts, dim=0, return_counts=True)
    weight = weight.double()
    n = pts.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(
            f"mdfast: argument 'k' must be an int in [1, {n}] (the distinct points), got {k!r}"
        )
    gen = torch.Generator().manual_seed(seed)
    centroids = pts[torch.multinomial(weight, 1, generator=gen)]
    d2 = torch.cdist(pts, centroids).squeeze(1).square()
    for _ in range(1, k):  # k-means++: the next centre with probability ∝ squared distance
        mass = weight * d2
        nxt = pts[torch.multinomial(mass if mass.sum() > 0 else weight, 1, generator=gen)]
        centroids = torch.cat([centroids, nxt])
        d2 = torch.minimum(d2, torch.cdist(pts, nxt).squeeze(1).square())
    codes = None
    for _ in range(iters):
        new = assign(pts, centroids)
        if codes is not None and torch.equal(new, codes):
            break
        codes = new
        counts = torch.zeros(k, dtype=torch.float64).index_add_(0, codes, weight)
        sums = torch.zeros_like(centroids).index_add_(0, codes, pts * weight[:, None])
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
        for j in empty.nonzero().flatten().tolist():
            far = (pts - centroids[codes]).square().sum(1).argmax()
            centroids[j] = pts[far]
    centroids = centroids[centroids[:, 0].argsort()]
    return centroids.squeeze(1) if scalar else centroids
