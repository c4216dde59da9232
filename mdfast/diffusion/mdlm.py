"""MDLM's SUBS objective (continuous time and discrete T), on ``mdfast.losses.subs_loss``."""

from __future__ import annotations

import torch

from mdfast import ops, rng
from mdfast.diffusion.base import Objective, sample_t, token_mean, unpack
from mdfast.losses import subs_loss
from mdfast.schedules import Schedule, get_schedule

__all__ = ["MDLM", "discretize_t", "mask_tokens", "resolve_schedule"]


def resolve_schedule(schedule: Schedule | str | None) -> Schedule:
    """A :class:`mdfast.schedules.Schedule`, by name (``"loglinear"``, ``"cosine"``, …) or as is;
    None = MDLM's log-linear."""
    if schedule is None:
        return get_schedule("loglinear")
    return get_schedule(schedule) if isinstance(schedule, str) else schedule


def mask_tokens(
    x0: torch.Tensor,
    move_chance: torch.Tensor,
    mask_index: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MDLM ``q_xt``: each token independently becomes ``mask_index`` with prob ``move_chance``
    (shape [B] or broadcastable to ``x0``). The uniforms are ``Purpose.MASK`` noise
    (:func:`mdfast.rng.draw`: keyed per sample when a NoiseKey is active)."""
    mc = move_chance.reshape(-1, *([1] * (x0.dim() - 1))) if move_chance.dim() == 1 else move_chance
    u = rng.draw(rng.Purpose.MASK, x0.shape, device=x0.device, generator=generator)
    return torch.where(u < mc, mask_index, x0)


def discretize_t(t: torch.Tensor, T: int) -> torch.Tensor:
    """MDLM's discrete-time grid: t ∈ {1/T, …, 1} (``int(t·T)/T + 1/T``)."""
    return ((t * T).floor() / T + 1.0 / T).clamp(max=1.0)


class _FixedWeight:
    """A stand-in schedule for :func:`subs_loss` whose loss weight is given, not derived."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight

    def loss_weight(self, t):
        return self.weight.to(t.dtype)


class MDLM(Objective):
    """MDLM SUBS NELBO: t ~ antithetic U[ε, 1] (ε = ``sampling_eps``), x_t = mask each token with
    prob 1−α_t, loss = token mean over the attention mask of ``subs_loss`` (weight −α'/(1−α)
    = 1/t for log-linear at masked positions, 0 elsewhere).

    ``T > 0``: discrete time, t on the grid {1/T, …, 1}. With SUBS the mask logit is excluded,
    so MDLM's two-term ``_d3pm_loss`` reduces to T·(α_s−α_t)/(1−α_t)·CE = the continuous weight
    at the grid point: the same ``subs_loss`` on discretised t.
    """

    def __init__(
        self,
        model,
        mask_index: int,
        T: int = 0,
        antithetic: bool = True,
        sampling_eps: float = 1e-3,
        schedule: Schedule | str | None = None,
        fused: bool = False,
    ):
        super().__init__(model)
        self.mask_index = mask_index
        self.T = T
        self.antithetic = antithetic
        self.sampling_eps = sampling_eps
        self.schedule = resolve_schedule(schedule)
        self.fused = fused

    def sample_t(self, n: int, device) -> torch.Tensor:
        t = sample_t(n, eps=self.sampling_eps, antithetic=self.antithetic, device=device)
        return discretize_t(t, self.T) if self.T > 0 else t

    def per_token(self, x0, xt, t, sigma, weight=None) -> torch.Tensor:
        """SUBS loss per token. ``weight`` ([B]) replaces the schedule's −α'/(1−α) at ``t``
        (the likelihood evaluation passes the exact discrete-time weights). ``fused``: the
        backbone's trunk, then the output projection fused with the masked CE
        (:func:`mdfast.ops.linear_masked_ce`), so logits are computed only for masked rows, a
        chunk at a time; needs ``model.trunk`` / ``head_weight`` / ``head_bias`` (the DiT and the
        IMDM backbone have them)."""
        lead = (-1, *([1] * (xt.dim() - 1)))
        if not self.fused:
            logits = self.model(xt, sigma)
            sched = self.schedule if weight is None else _FixedWeight(weight.reshape(lead))
            return subs_loss(logits, x0, xt, self.mask_index, t, sched)
        hidden = self.model.trunk(xt, sigma)
        w, b = self.model.head_weight, self.model.head_bias
        dev = hidden.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else w.dtype
        masked = xt == self.mask_index
        tt = t.detach().reshape(lead).float()
        wt = self.schedule.loss_weight(tt) if weight is None else weight.reshape(lead).float()
        row_w = torch.where(masked, wt, 0.0).reshape(-1)
        loss = ops.linear_masked_ce(
            hidden.reshape(-1, hidden.shape[-1]).to(dtype),
            w.to(dtype),
            None if b is None else b.to(dtype),
            x0.reshape(-1),
            row_w,
            exclude_index=self.mask_index,
        )
        return loss.reshape(xt.shape)

    def forward(self, batch):
        x0, attn, _ = unpack(batch)
        t = self.sample_t(x0.shape[0], x0.device)
        sigma, _ = self.schedule.sigma(t)
        xt = mask_tokens(x0, self.schedule.move_chance(t), self.mask_index)
        loss = token_mean(self.per_token(x0, xt, t, sigma), attn)
        masked_frac = (xt == self.mask_index).float().mean()
        return loss, {"nelbo": loss.detach(), "masked_frac": masked_frac}
