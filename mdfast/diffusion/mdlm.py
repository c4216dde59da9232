"""MDLM's SUBS objective (continuous time and discrete T), on ``mdfast.losses.subs_loss``."""

from __future__ import annotations

import torch

from mdfast.diffusion.base import Objective, masked_mean, sample_t, unpack

__all__ = ["MDLM", "default_schedule", "mask_tokens", "schedule_alpha"]


def default_schedule():
    from mdfast.schedules import LogLinear

    return LogLinear()


def schedule_alpha(schedule, t: torch.Tensor) -> torch.Tensor:
    """α_t of ``schedule`` (the schedules of :mod:`mdfast.schedules`)."""
    return schedule.alpha(t)


def mask_tokens(x0: torch.Tensor, move_chance: torch.Tensor, mask_index: int) -> torch.Tensor:
    """MDLM ``q_xt``: each token independently becomes ``mask_index`` with prob ``move_chance``
    (shape [B] or broadcastable to ``x0``)."""
    mc = move_chance.reshape(-1, *([1] * (x0.dim() - 1))) if move_chance.dim() == 1 else move_chance
    return torch.where(torch.rand(x0.shape, device=x0.device) < mc, mask_index, x0)


def discretize_t(t: torch.Tensor, T: int) -> torch.Tensor:
    """MDLM's discrete-time grid: t ∈ {1/T, …, 1} (``int(t·T)/T + 1/T``)."""
    return ((t * T).floor() / T + 1.0 / T).clamp(max=1.0)


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
        schedule=None,
    ):
        super().__init__(model)
        self.mask_index = mask_index
        self.T = T
        self.antithetic = antithetic
        self.sampling_eps = sampling_eps
        self.schedule = schedule if schedule is not None else default_schedule()

    def sample_t(self, n: int, device) -> torch.Tensor:
        t = sample_t(n, device, self.sampling_eps, self.antithetic)
        return discretize_t(t, self.T) if self.T > 0 else t

    def logits(self, xt: torch.Tensor, alpha_t: torch.Tensor) -> torch.Tensor:
        sigma = -torch.log(alpha_t)
        return self.model(xt, sigma)

    def forward(self, batch):
        from mdfast.losses import subs_loss

        x0, attn, _ = unpack(batch)
        t = self.sample_t(x0.shape[0], x0.device)
        alpha_t = schedule_alpha(self.schedule, t)
        xt = mask_tokens(x0, 1 - alpha_t, self.mask_index)
        logits = self.logits(xt, alpha_t)
        per_token = subs_loss(logits, x0, xt, self.mask_index, t, self.schedule)
        loss = masked_mean(per_token, attn)
        return loss, {"nelbo": loss.detach(), "masked_frac": (xt == self.mask_index).float().mean()}
