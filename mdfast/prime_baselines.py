"""The MDM-Prime image sampler as the seed code computes it (``image/utils/solver.py`` with
``wrapper.py`` and ``utils.py``): a materialised, torch-RNG baseline for benchmarks and the
CPU-scale comparison against :func:`mdfast.sampling.prime.prime_sample`.

Per call, with p = softmax(z / T(τ)) over all C classes (the seed applies no consistency mask):

* ``carry_over``: the per-digit marginals q (the seed's ``convert_to_marginal_time``: a
  [ℓL, b, C] boolean table per position and a [B, ℓL, b, C] product summed over C), a zero mask
  column, then ``torch.multinomial`` over (α_σ − α_τ)/(1 − α_τ)·q + (1 − α_σ)/(1 − α_τ)·δ_mask for
  every digit; masked digits take the draw.
* otherwise: one ĉ ~ p per token (``multinomial``), its digits ŷ, then a draw over
  (α_σ − α_τ)/(1 − α_τ)·δ_ŷ + (1 − α_σ)/(1 − α_τ)·δ_mask (one-hot tensors over b + 1) per digit.
* corrector: u = α'/(1 − α)·δ_ŷ + β·α'/(α(1 − α))·((1 − α)·δ_mask + α·δ_ŷ), zero at the current
  state, jump w.p. 1 − exp(−h Σu) to a draw ∝ u (ŷ a fresh marginal draw with carry-over).
* last call: every masked digit takes ŷ (carry-over: a marginal draw).

Defects kept on purpose (this is the baseline, not a sampler to use): digits drawn without the
consistency mask, codes ≥ C possible when b^ℓ > C, NaN rates at α ∈ {0, 1} (no jump). ℓ = 1 with
carry-over works here (the seed crashes on a 257-vs-258 shape mismatch).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mdfast.reference import prime_digit_table

__all__ = ["seed_prime_image_sample", "seed_prime_image_step"]


def _categorical(probs: torch.Tensor, generator) -> torch.Tensor:
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, replacement=True, generator=generator).view(probs.shape[:-1])


def _marginals(p: torch.Tensor, num_digits: int, base: int) -> torch.Tensor:
    """[B, L, C] -> [B, L, ℓ, b + 1] with a zero mask column, materialising [B, ℓL, b, C]."""
    b_, length, c = p.shape
    table = prime_digit_table(c, base, num_digits, p.device)  # [C, ℓ]
    k = torch.arange(base, device=p.device)
    masks = table.T[:, None, :] == k[None, :, None]  # [ℓ, b, C]
    masks = masks[:, None].expand(num_digits, length, base, c).reshape(num_digits * length, base, c)
    expanded = p.unsqueeze(1).expand(b_, num_digits, length, c).reshape(b_, num_digits * length, c)
    q = (expanded.unsqueeze(2) * masks.unsqueeze(0).float()).sum(3)  # [B, ℓL, b]
    q = torch.cat([q, q.new_zeros(b_, num_digits * length, 1)], dim=2)
    return q.view(b_, num_digits, length, base + 1).transpose(1, 2)


def seed_prime_image_step(
    logits: torch.Tensor,
    y: torch.Tensor,
    *,
    base: int,
    alpha_t: float,
    alpha_s: float,
    d_alpha: float,
    h: float,
    temperature: float = 1.0,
    carry_over: bool = False,
    beta: float | None = None,
    last: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One call of the seed's solver on logits [B, L, C] and digits y [B, L, ℓ] (mask id =
    ``base``); ``beta`` = β(τ) when the corrector is on. Returns the new digits."""
    num_digits = y.shape[-1]
    mask = base
    p = torch.softmax(logits.float() / temperature, dim=-1)
    y = y.clone()
    if carry_over:
        q = _marginals(p, num_digits, base)

        def proposal():
            return _categorical(q, generator)
    else:
        c_hat = _categorical(torch.cat([p, p.new_zeros(*p.shape[:-1], 1)], -1), generator)
        table = prime_digit_table(p.shape[-1] + 1, base, num_digits, p.device)
        y0 = table[c_hat]

        def proposal():
            return y0

    masked = y == mask
    if last:
        y[masked] = proposal()[masked]
        return y
    delta_m = F.one_hot(torch.full_like(y, mask), base + 1).float()
    reveal = (alpha_s - alpha_t) / (1 - alpha_t)
    keep = (1 - alpha_s) / (1 - alpha_t)
    if carry_over:
        y_s = _categorical(reveal * q + keep * delta_m, generator)
    else:
        y_s = _categorical(reveal * F.one_hot(y0, base + 1).float() + keep * delta_m, generator)
    y[masked] = y_s[masked]
    if beta is not None and 0.0 < alpha_t < 1.0:  # the seed's 0/0 at α ∈ {0, 1}: no jump
        delta_0 = F.one_hot(proposal(), base + 1).float()
        u = d_alpha / (1 - alpha_t) * delta_0 + beta * d_alpha / (alpha_t * (1 - alpha_t)) * (
            (1 - alpha_t) * delta_m + alpha_t * delta_0
        )
        u = torch.where(F.one_hot(y, base + 1).bool(), torch.zeros_like(u), u)
        u_rand = torch.rand(y.shape, generator=generator, device=y.device)
        jump = u_rand < 1 - torch.exp(-h * u.sum(-1))
        if bool(jump.any()):
            y[jump] = _categorical(u[jump], generator)
    return y


@torch.no_grad()
def seed_prime_image_sample(
    denoiser,
    y: torch.Tensor,
    *,
    base: int,
    settings,
    schedule_n: float = 3.0,
    generator: torch.Generator | None = None,
    step_timer=None,
) -> torch.Tensor:
    """The seed's solver loop with the knobs of ``settings`` (a
    :class:`mdfast.sampling.prime.PrimeSamplerSettings`; its warp, temperature and corrector as
    there). ``step_timer``: a context-manager factory wrapped around each step (to time the
    step apart from the denoiser)."""
    import contextlib

    from mdfast.sampling.prime import time_grid

    grid = time_grid(settings)
    corrector = settings.corrector_rate()
    timer = step_timer or contextlib.nullcontext
    for k, tau in enumerate(grid):
        last = k == settings.nfe - 1
        sigma = 1.0 if last else grid[k + 1]
        logits = denoiser(y, tau)
        beta = None
        if corrector is not None:
            beta = corrector[0] * tau ** corrector[1] * (1 - tau) ** corrector[1]
        with timer():
            y = seed_prime_image_step(
                logits,
                y,
                base=base,
                alpha_t=tau**schedule_n,
                alpha_s=sigma**schedule_n,
                d_alpha=schedule_n * tau ** (schedule_n - 1),
                h=sigma - tau,
                temperature=settings.temperature(tau),
                carry_over=settings.carry_over,
                beta=beta,
                last=last,
                generator=generator,
            )
    return y
