"""Exact-ELBO likelihood of a masked diffusion model (bits per token).

For an absorbing-state (masking) diffusion whose denoiser sees only x_t (no time input), the
continuous-time NELBO with α_0 = 1, α_1 = 0 is the same for every schedule (MDLM, Sahoo et al.
2024):

    NELBO(x0) = ∫_0^1 −α'_t/(1−α_t) · E_{x_t} Σ_{i masked} −log p_θ(x0_i | x_t) dt.

Conditioning on the number k of masked tokens (for α_t = 1 − t: P(k | t) is Binomial(n, t) and
∫ (1/t) C(n,k) t^k (1−t)^(n−k) dt = 1/k) turns it into the any-order form

    NELBO(x0) = Σ_{k=1}^{n} E_{M ⊂ [n], |M| = k uniform} [ (1/k) Σ_{i∈M} −log p_θ(x0_i | x0_M̄) ]

(x0_M̄: x0 with the positions in M masked),

i.e. n · E_{k ~ U{1..n}} E_M [mean_{i∈M} CE_i], with no 1/t weight to blow up the variance. The
estimator below draws k stratified over the batch and one uniform k-subset per image: an
unbiased estimate of the NELBO (an upper bound on −log p_θ(x0)); bits per token = NELBO / (n ln 2).
There is no prior term (x_1 is all-masked) and no reconstruction term (x_0 is the data).

**Part of the time range** (``t_max`` < 1, linear schedule α_t = 1 − t, t = masked fraction).
The terms of the NELBO from t ∈ (0, t_max) alone bound the likelihood of the reverse process
started at t_max:

    E_{x_{t_max} ~ q(·|x0)} [−log p_θ(x0 | x_{t_max})]
        ≤ ∫_0^{t_max} (1/t) E_{x_t ~ q(·|x0)} Σ_{i masked} −log p_θ(x0_i | x_t) dt,

the NLL of the tokens masked at t_max given the others (E over x_{t_max} and then over x_t given
x_{t_max}, x0 is E over x_t ~ q(·|x0)). In the any-order form the weight of k masked tokens
becomes ∫_0^{t_max} (1/t) C(n,k) t^k (1−t)^(n−k) dt = (1/k) I_{t_max}(k, n−k+1) =
(1/k) P(Binomial(n, t_max) ≥ k) =: w_k / k, so

    NELBO_{<t_max}(x0) = Σ_k w_k E_{|M|=k} [mean_{i∈M} CE_i] = W · E_{k ~ w/W} E_M [mean CE],

W = Σ_k w_k = n · t_max. The estimator draws k from w/W (inverse CDF, stratified over the batch)
and scales by W; t_max = 1 gives w_k = 1, the full NELBO. The two parts add up: the full NELBO
is NELBO_{<t_max} plus the part from (t_max, 1).
"""

from __future__ import annotations

import functools
import math

import torch

from mdfast import rng
from mdfast.ops import masked_ce

__all__ = ["nelbo_bits_per_token", "nelbo_per_sequence"]


@functools.lru_cache(maxsize=16)
def _mask_count_law(n: int, t_max: float) -> tuple[torch.Tensor, float]:
    """(CDF over k = 1..n of w_k / W, W) with w_k = P(Binomial(n, t_max) ≥ k), float64."""
    k = torch.arange(1, n + 1, dtype=torch.float64)
    if t_max >= 1.0:
        w = torch.ones(n, dtype=torch.float64)
    else:
        j = torch.arange(0, n + 1, dtype=torch.float64)
        log_pmf = (
            torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64))
            - torch.lgamma(j + 1)
            - torch.lgamma(n - j + 1)
            + j * math.log(t_max)
            + (n - j) * math.log1p(-t_max)
        )
        tail = log_pmf.exp().flip(0).cumsum(0).flip(0)  # P(Bin ≥ j), j = 0..n
        w = tail[k.long()]
    total = float(w.sum())
    return (w.cumsum(0) / total), total


def nelbo_per_sequence(
    model,
    x0: torch.Tensor,
    *,
    mask_index: int,
    t_max: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One unbiased estimate per sequence of the NELBO of ``x0`` [b, ...] (its part from
    t < ``t_max``), in nats, float [b]; differentiable in the model's parameters.

    The number k of masked tokens is drawn from w/W, stratified over the batch (``Purpose.TIME``
    noise: over the active :class:`mdfast.rng.NoiseKey`'s global batch when one is active), and
    one uniform k-subset per sequence is masked (``Purpose.MASK``; module docstring).
    ``generator``, if given, supplies both draws instead."""
    if not 0.0 < t_max <= 1.0:
        raise ValueError(f"mdfast: argument 't_max' must be in (0, 1], got {t_max}")
    device = x0.device
    b, n = x0.shape[0], x0[0].numel()
    cdf, total = _mask_count_law(n, float(t_max))
    frac = rng.stratified(
        rng.Purpose.TIME, b, device="cpu", dtype=torch.float64, generator=generator
    )
    k = (1 + torch.searchsorted(cdf, frac, right=True)).clamp(max=n).to(device)
    u = rng.draw(rng.Purpose.MASK, (b, n), device="cpu", dtype=torch.float64, generator=generator)
    ranks = u.argsort(1).argsort(1)
    masked = (ranks.to(device) < k[:, None]).view_as(x0)
    logits = model(x0.masked_fill(masked, mask_index))
    ce = masked_ce(
        logits.reshape(-1, logits.shape[-1]),
        x0.reshape(-1),
        masked.reshape(-1).float(),
        exclude_index=mask_index if mask_index < logits.shape[-1] else -1,
    )
    return ce.view(b, -1).sum(1) / k * total


@torch.no_grad()
def nelbo_bits_per_token(
    model,
    x0: torch.Tensor,
    *,
    mask_index: int,
    repeats: int = 1,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    t_max: float = 1.0,
    seed: int | None = None,
) -> tuple[float, float]:
    """Estimate the NELBO of the clean tokens ``x0`` [N, ...] in bits per token.

    ``model(x)`` maps tokens of ``x0``'s shape to logits [..., V]; the class ``mask_index``, if
    the model has one, is left out of the softmax (SUBS). ``t_max`` in (0, 1]: only the part of
    the time integral from (0, t_max) (module docstring), still divided by all n tokens, so the
    parts of a split add up to the full NELBO.
    ``seed``: keyed noise (:class:`mdfast.rng.NoiseKey` with step = repeat and sample index =
    the sequence's index in ``x0``), so the estimate does not depend on ``batch_size``; the k of
    a repeat are stratified over all N sequences. Else ``generator`` (or torch's RNG).
    Returns (mean, standard error) over the N·repeats per-image estimates.
    """
    if x0.shape[0] == 0:
        raise ValueError("mdfast: argument 'x0' is empty")
    if repeats < 1:
        raise ValueError(f"mdfast: argument 'repeats' must be >= 1, got {repeats}")
    n = x0[0].numel()
    estimates = []
    total = x0.shape[0]
    for repeat in range(repeats):
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            key = None
            if seed is not None:
                key = rng.NoiseKey(seed, repeat, torch.arange(start, stop), total)
            with rng.noise_key(key):
                nats = nelbo_per_sequence(
                    model, x0[start:stop], mask_index=mask_index, t_max=t_max, generator=generator
                )
            estimates.append(nats.double().cpu() / (n * math.log(2)))
    est = torch.cat(estimates)
    stderr = est.std().item() / math.sqrt(est.numel()) if est.numel() > 1 else float("nan")
    return est.mean().item(), stderr
