"""MDM-Prime (partial masking): each token c ∈ [0, C) is ℓ base-b digits (:mod:`mdfast.digits`),
and every digit is masked independently with the schedule's probability.

:class:`Prime` holds the digit embedding (one table of b + 1 rows shared by all digit positions,
the ℓ embeddings of a token concatenated), the forward process, the ``joint`` and ``elbo`` losses
(:func:`mdfast.ops.prime_ce`), a stratified NLL / BPD estimator that uses ``elbo`` (the only one
of the two that bounds the NLL when ℓ > 1), and the reverse step
(:func:`mdfast.ops.prime_sample_step`).

Two time conventions (normalised in :func:`digit_schedule`):

* ``"mdlm"``: t ∈ (0, 1] is the noise level; a digit is masked w.p. (1 − ε) t (log-linear,
  α_t = 1 − (1 − ε) t); ELBO weight −α'/(1 − α) = 1/t.
* ``"polynomial"`` (the MDM-Prime image code, flow-matching time): t = 0 is noise, t = 1 data; a
  digit is masked w.p. 1 − tⁿ (α_t = tⁿ); ELBO weight α'/(1 − α) = n t^(n−1) / (1 − tⁿ).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from mdfast import ops, rng
from mdfast.digits import encode, prime_base, smallest_class
from mdfast.schedules import LogLinearSchedule, PolynomialSchedule, flip_time, sample_t

__all__ = ["Prime", "digit_schedule"]


def digit_schedule(
    t: torch.Tensor, convention: str = "mdlm", *, n: float = 3.0, eps: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """(α_t, w_t): the probability that a digit is visible at time t and the ELBO weight
    |α'_t| / (1 − α_t), for the two time conventions of the module docstring. Both come from
    :mod:`mdfast.schedules` (``mdlm``: :class:`~mdfast.schedules.LogLinearSchedule`;
    ``polynomial``: :class:`~mdfast.schedules.PolynomialSchedule` at ``flip_time(t)``)."""
    t = t.double() if t.dtype != torch.float64 else t
    if convention == "mdlm":
        schedule, mdfast_time = LogLinearSchedule(eps), t
    elif convention == "polynomial":
        schedule, mdfast_time = PolynomialSchedule(n), flip_time(t)
    else:
        raise ValueError(
            f"mdfast: argument 'convention' must be 'mdlm' or 'polynomial', got '{convention}'"
        )
    return schedule.alpha(mdfast_time), schedule.loss_weight(mdfast_time)


class Prime(nn.Module):
    """MDM-Prime sub-token process with its digit embedding.

    Args:
        num_classes: C, the token vocabulary (256 per sub-pixel for images, 50257 for GPT-2).
        num_digits: ℓ digits per token; b = ⌈C^(1/ℓ)⌉ and the mask id is b.
        embed_dim: d, the width of a token's embedding; the shared digit table has
            b + 1 rows of d / ℓ (d must be divisible by ℓ).
        convention: ``"mdlm"`` or ``"polynomial"`` (see :func:`digit_schedule`).
        schedule_n: n of the polynomial schedule (the seed's ``--schedule_n``, default 3).
        eps: ε of the log-linear schedule and the time cut-off of training / NLL times.
        loss: default loss mode, ``"elbo"`` (a bound on the NLL) or ``"joint"`` (the seed's text
            loss; not a bound for ℓ > 1).
    """

    def __init__(
        self,
        num_classes: int,
        num_digits: int,
        embed_dim: int,
        *,
        convention: str = "mdlm",
        schedule_n: float = 3.0,
        eps: float = 1e-3,
        loss: str = "elbo",
    ) -> None:
        super().__init__()
        if embed_dim % num_digits:
            raise ValueError(
                f"mdfast: argument 'embed_dim' ({embed_dim}) must be divisible by 'num_digits' "
                f"({num_digits})"
            )
        if loss not in ("elbo", "joint"):
            raise ValueError(f"mdfast: argument 'loss' must be 'elbo' or 'joint', got '{loss}'")
        digit_schedule(torch.tensor([0.5]), convention)  # validates the convention
        self.num_classes = num_classes
        self.num_digits = num_digits
        self.base = prime_base(num_classes, num_digits)
        self.mask_id = self.base
        self.convention = convention
        self.schedule_n = schedule_n
        self.eps = eps
        self.loss_mode = loss
        self.embedding = nn.Embedding(self.base + 1, embed_dim // num_digits)

    # ---------------------------------------------------------------- digits and embedding

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens int64[...] -> digits int64[..., ℓ]."""
        return encode(x, self.num_classes, self.num_digits)

    def embed(self, digits: torch.Tensor) -> torch.Tensor:
        """Digits int64[..., ℓ] (mask id b allowed) -> [..., d]: the ℓ rows of the shared table,
        concatenated in digit order."""
        return self.embedding(digits).flatten(-2)

    # ---------------------------------------------------------------- forward process

    def schedule(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(α_t, ELBO weight w_t) in this module's time convention."""
        return digit_schedule(t, self.convention, n=self.schedule_n, eps=self.eps)

    def noise(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        stream: tuple = (),
    ) -> torch.Tensor:
        """Forward process: digits of x0 [B, ...] with each digit masked independently
        w.p. 1 − α_t (t: [B]). Returns int64[B, ..., ℓ]. The uniforms are ``Purpose.MASK``
        noise (:func:`mdfast.rng.draw`; ``stream`` ids tell apart several draws of one step)."""
        digits = self.encode(x0)
        alpha, _ = self.schedule(t)
        shape = (x0.shape[0],) + (1,) * (digits.dim() - 1)
        u = rng.draw(rng.Purpose.MASK, digits.shape, *stream, device=digits.device,
                     dtype=torch.float64, generator=generator)  # fmt: skip
        return torch.where(u >= alpha.to(digits.device).view(shape), self.mask_id, digits)

    def sample_times(
        self, batch: int, device=None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Stratified (antithetic) times, one per sequence, from :func:`mdfast.schedules.sample_t`
        (MDLM's: t_k = ε + (1 − ε)(k + u_k)/B, strata over the global batch when a NoiseKey is
        active), in the convention's training range: [ε, 1) for
        mdlm, its flip (0, 1 − ε] for polynomial (where t = 1 is data). Float64, drawn on the CPU
        (``generator`` is a CPU generator), then moved to ``device``."""
        t = sample_t(batch, eps=self.eps, generator=generator, dtype=torch.float64)
        return (t if self.convention == "mdlm" else flip_time(t)).to(device)

    # ---------------------------------------------------------------- losses

    def token_losses(
        self,
        logits: torch.Tensor,
        x0: torch.Tensor,
        digits_t: torch.Tensor,
        t: torch.Tensor,
        mode: str | None = None,
    ) -> torch.Tensor:
        """w_t · ℓ_i per token ([B, L]): logits [B, L, C], x0 [B, L], digits_t [B, L, ℓ], t [B].
        ℓ_i is :func:`mdfast.ops.prime_ce` in ``mode`` (default: the module's loss)."""
        mode = mode or self.loss_mode
        b, length = x0.shape
        _, w = self.schedule(t)
        w = w.to(logits.device, torch.float64 if logits.dtype == torch.float64 else torch.float32)
        weight = w[:, None].expand(b, length).reshape(-1)
        loss = ops.prime_ce(
            logits.reshape(b * length, -1),
            x0.reshape(-1),
            digits_t.reshape(b * length, self.num_digits),
            base=self.base,
            mode=mode,
            weight=weight.contiguous(),
        )
        return loss.view(b, length)

    def loss(
        self,
        logits: torch.Tensor,
        x0: torch.Tensor,
        digits_t: torch.Tensor,
        t: torch.Tensor,
        mode: str | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training loss: the token mean (over ``attention_mask`` if given) of
        :meth:`token_losses`. With ``mode="elbo"`` it is an unbiased estimate of the NELBO per
        token (in nats) when t follows :meth:`sample_times`."""
        per_token = self.token_losses(logits, x0, digits_t, t, mode)
        if attention_mask is None:
            return per_token.mean()
        m = attention_mask.to(per_token.dtype)
        return (per_token * m).sum() / m.sum().clamp_min(1)

    @torch.no_grad()
    def nll(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        x0: torch.Tensor,
        *,
        num_times: int = 512,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Stratified Monte-Carlo NELBO with the ``elbo`` loss (the seed's ``compute_nll_bpd``,
        with a loss that is a bound for ℓ > 1).

        For each sequence, K = ``num_times`` times t_k = ((k/K + u) mod 1) mapped onto (0, 1)
        (u ~ U(0, 1) per sequence; capped at 1 − ε in the polynomial convention where w_t
        diverges at the data end), and NLL = (1/K) Σ_k Σ_i w(t_k) ℓ_i^elbo(t_k).

        Args:
            model: digits [B, L, ℓ] -> logits [B, L, C].
            x0: tokens int64[B, L].

        Returns:
            ``nll`` [B] (nats per sequence), ``nll_per_token`` [B] and ``bpd`` [B]
            (bits per token: nll / (L ln 2)).
        """
        b, length = x0.shape
        u = rng.draw(rng.Purpose.TIME, b, "nll", dtype=torch.float64, generator=generator)
        total = torch.zeros(b, dtype=torch.float64)
        for k in range(num_times):
            s = torch.remainder(k / num_times + u, 1.0)
            if self.convention == "polynomial":
                t = s * (1 - self.eps)
            else:
                t = s.clamp_min(1e-12)
            digits_t = self.noise(x0, t.to(x0.device), generator=generator, stream=("nll", k))
            logits = model(digits_t)
            total += self.token_losses(logits, x0, digits_t, t, "elbo").double().sum(1).cpu()
        nll = total / num_times
        return {
            "nll": nll,
            "nll_per_token": nll / length,
            "bpd": nll / (length * math.log(2.0)),
        }

    # ---------------------------------------------------------------- reverse step

    def step(
        self,
        logits: torch.Tensor,
        digits: torch.Tensor,
        t: float,
        s: float,
        *,
        temperature: float = 1.0,
        mode: str = "exact",
        fixed_digits: torch.Tensor | None = None,
        seed: int,
        offset: int,
    ) -> torch.Tensor:
        """One reverse step from time t to the less noisy time s (s < t for mdlm, s > t for
        polynomial): :func:`mdfast.ops.prime_sample_step` with α from the schedule.
        logits [..., C], digits [..., ℓ]; returns the next digits [..., ℓ]."""
        alpha_t, _ = self.schedule(torch.tensor([t], dtype=torch.float64))
        alpha_s, _ = self.schedule(torch.tensor([s], dtype=torch.float64))
        a_t, a_s = float(alpha_t), float(alpha_s)
        if s == (0.0 if self.convention == "mdlm" else 1.0):
            a_s = 1.0  # the last step reveals every digit
        shape = digits.shape
        out = ops.prime_sample_step(
            logits.reshape(-1, logits.shape[-1]),
            digits.reshape(-1, self.num_digits),
            base=self.base,
            alpha_t=a_t,
            alpha_s=max(a_s, a_t),
            temperature=temperature,
            mode=mode,
            fixed_digits=fixed_digits,
            seed=seed,
            offset=offset,
        )
        return out.view(shape)

    def corrector_step(
        self,
        logits: torch.Tensor,
        digits: torch.Tensor,
        t: float,
        h: float,
        *,
        a: float,
        b: float,
        temperature: float = 1.0,
        mode: str = "exact",
        fixed_digits: torch.Tensor | None = None,
        seed: int,
        offset: int,
    ) -> torch.Tensor:
        """The seed's corrector (``--use_corrector_step``, ``corrector_parameters a b c``), run
        after a predictor step; β(t) = a·t^b·(1 − t)^b (the seed never uses c, neither do we).

        Per digit, with α = α_t, |α'| its time derivative's magnitude, r = |α'|/(1 − α) and a
        proposal ŷ, the rates are u(ŷ) = r (1 + β) and u(m) = β |α'| / α, each 0 at the current
        state; the digit jumps w.p. 1 − exp(−h Σu) to a state drawn ∝ u. Masked digits reveal ŷ;
        visible digits are re-masked or switched to ŷ. ŷ is the digit of one class
        ĉ ~ softmax(z/τ) over all C classes (``mode="exact"``), or an independent per-digit
        marginal draw (``"marginal"``, the seed's carry-over flavour): both come from
        :func:`mdfast.ops.prime_sample_step` on a fully masked token with (seed, offset); the two
        uniforms per digit from :func:`mdfast.ops.uniform` with (seed, offset + 1). Advance the
        offset by 2 per call.

        Unlike the seed, the output stays valid: a token whose new visible digits allow no class
        < C (possible only when b^ℓ > C) keeps its old digits, and ``fixed_digits`` never change.
        At α ∈ {0, 1} the rates are 0/0 (the seed's NaN) and nothing jumps. This is a
        pure-PyTorch O(N·ℓ) step on top of the sampling kernel, not a fused kernel.
        """
        alpha_t, w_t = self.schedule(torch.tensor([t], dtype=torch.float64))
        alpha = float(alpha_t)
        if not 0.0 < alpha < 1.0 or h <= 0:
            return digits.clone()
        dalpha = float(w_t) * (1.0 - alpha)
        beta = a * t**b * (1.0 - t) ** b
        shape = digits.shape
        d = digits.reshape(-1, self.num_digits)
        z = logits.reshape(d.shape[0], -1)
        proposal = ops.prime_sample_step(
            z,
            torch.full_like(d, self.mask_id),
            base=self.base,
            alpha_t=0.0,
            alpha_s=1.0,
            temperature=temperature,
            mode=mode,
            seed=seed,
            offset=offset,
        )
        u = ops.uniform((*d.shape, 2), seed, offset + 1, device=d.device)
        masked = d == self.mask_id
        rate_y = torch.where(d == proposal, 0.0, dalpha / (1.0 - alpha) * (1.0 + beta))
        rate_m = torch.where(masked, 0.0, beta * dalpha / alpha)
        total = rate_y + rate_m
        jump = u[..., 0] < -torch.expm1(-h * total)
        to_mask = u[..., 1] * total < rate_m
        new = torch.where(jump, torch.where(to_mask, self.mask_id, proposal), d)
        if fixed_digits is not None and fixed_digits.numel():
            new[:, fixed_digits.to(d.device)] = d[:, fixed_digits.to(d.device)]
        new = torch.where((smallest_class(new, self.base) >= self.num_classes)[:, None], d, new)
        return new.view(shape)
