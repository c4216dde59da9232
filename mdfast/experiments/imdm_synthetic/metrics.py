"""The synthetic task's few-step metrics.

* all-equal fraction: the share of samples whose L tokens are all the same token (the data law
  gives 1; an MDLM, which samples the positions of its first step independently, about
  V^−(L−1) at one step);
* first-token entropy: the plug-in entropy (nats) of the first position's token over the
  samples (the data law gives log V; a sampler that collapsed to few tokens gives less);
* ideal MDLM: the all-equal fraction of a perfect MDLM denoiser under the IMDM sampler's grid
  (closed form, below).

Ideal MDLM at K steps: with all positions masked the denoiser's prediction is uniform; once a
token is visible every masked position copies it. On the grid t_k = 1 − k(1 − ε)/K with the last
step to α = 1, a position unmasks at the first step with probability q = (α(t_1) − α(1))/
(1 − α(1)); if j ≥ 1 positions unmask then, all are equal with probability V^−(j−1) and the rest
copy them; if none does, the next step is again from all-mask. So P(K) = Σ_j C(L, j) q^j
(1 − q)^(L−j) V^−(j−1) (j ≥ 1) + (1 − q)^L P'(K − 1) with P' the same on the remaining grid,
and the last step (α = 1) draws all L independently: V^−(L−1).
"""

from __future__ import annotations

import math

import torch

from mdfast.schedules import get_schedule

__all__ = ["all_equal_fraction", "first_token_entropy", "ideal_mdlm_all_equal"]


def all_equal_fraction(x: torch.Tensor) -> float:
    """Share of rows of ``x`` [N, L] whose tokens are all equal."""
    return float((x == x[:, :1]).all(dim=1).double().mean())


def first_token_entropy(x: torch.Tensor) -> float:
    """Plug-in entropy (nats) of ``x[:, 0]``."""
    _, counts = torch.unique(x[:, 0], return_counts=True)
    p = counts.double() / counts.sum()
    return float(-(p * p.log()).sum())


def ideal_mdlm_all_equal(steps: int, length: int, vocab: int, schedule: str = "loglinear",
                         eps: float = 1e-5) -> float:  # fmt: skip
    """All-equal probability of a perfect MDLM denoiser under :func:`mdfast.sampling.imdm`'s
    grid with ``steps`` steps (module docstring)."""
    sched = get_schedule(schedule)
    times = torch.linspace(1.0, eps, steps + 1, dtype=torch.float64)
    alphas = sched.alpha(times).tolist()
    alphas[-1] = 1.0  # the sampler's last step goes to alpha = 1
    # backwards over the grid: p_all_mask[k] = P(all equal | all masked at grid index k)
    p = vocab ** -(length - 1)  # the last step draws every position independently
    for k in range(steps - 2, -1, -1):
        a_t, a_s = alphas[k], alphas[k + 1]
        q = (a_s - a_t) / (1 - a_t)
        none = (1 - q) ** length
        some = sum(math.comb(length, j) * q**j * (1 - q) ** (length - j) * vocab ** -(j - 1)
                   for j in range(1, length + 1))  # fmt: skip
        p = some + none * p
    return p
