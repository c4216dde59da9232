"""SEDD absorbing-state score entropy (MDLM's ``_sedd_parameterization`` + ``_score_entropy``)."""

from __future__ import annotations

import math

import torch

from mdfast.diffusion.base import Objective, masked_mean, sample_t, unpack
from mdfast.diffusion.mdlm import default_schedule, mask_tokens, schedule_alpha

__all__ = ["SEDD", "score_entropy", "sedd_log_score"]


def sedd_log_score(logits: torch.Tensor, xt: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log s(y) = z_y − log(e^σ − 1) − log(V − 1), and 0 at the current token ``xt``."""
    esigm1 = torch.where(sigma < 0.5, torch.expm1(sigma), sigma.exp() - 1)
    shift = esigm1.log().to(logits.dtype)[:, None, None] + math.log(logits.shape[-1] - 1)
    out = logits - shift
    return torch.scatter(out, -1, xt[..., None], torch.zeros_like(out[..., :1]))


def score_entropy(log_score, sigma, xt, x0, mask_index: int) -> torch.Tensor:
    """Per-token score entropy (zero at unmasked positions):
    Σ_{y≠m} s(y) − r·log s(x0) + r(log r − 1), r = 1/(e^σ − 1)."""
    masked = xt == mask_index
    r = 1.0 / torch.expm1(sigma)[:, None].expand_as(xt)[masked]
    ls = log_score[masked].float()
    neg = r * ls.gather(-1, x0[masked][:, None]).squeeze(-1)
    score = ls.exp()
    pos = score.sum(-1) - score[:, mask_index]
    ent = torch.zeros(xt.shape, device=xt.device, dtype=torch.float32)
    ent[masked] = pos - neg + r * (r.log() - 1)
    return ent


class SEDD(Objective):
    """Loss = token mean of dσ/dt · score_entropy, σ = −log α_t (time-conditioned backbone)."""

    def __init__(
        self,
        model,
        mask_index: int,
        antithetic: bool = True,
        sampling_eps: float = 1e-3,
        schedule=None,
    ):
        super().__init__(model)
        self.mask_index = mask_index
        self.antithetic = antithetic
        self.sampling_eps = sampling_eps
        self.schedule = schedule if schedule is not None else default_schedule()

    def forward(self, batch):
        x0, attn, _ = unpack(batch)
        t = sample_t(x0.shape[0], x0.device, self.sampling_eps, self.antithetic)
        t = t.requires_grad_(True)
        with torch.enable_grad():
            alpha = schedule_alpha(self.schedule, t)
            (dalpha,) = torch.autograd.grad(alpha.sum(), t)
        alpha = alpha.detach()
        sigma = -torch.log(alpha)
        dsigma = -dalpha / alpha  # dσ/dt
        xt = mask_tokens(x0, 1 - alpha, self.mask_index)
        logits = self.model(xt, sigma)
        ent = score_entropy(
            sedd_log_score(logits.float(), xt, sigma), sigma, xt, x0, self.mask_index
        )
        loss = masked_mean(dsigma[:, None] * ent, attn)
        return loss, {"score_entropy": loss.detach()}
