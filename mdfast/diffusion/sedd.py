"""SEDD absorbing-state score entropy (MDLM's ``_sedd_parameterization`` + ``_score_entropy``)."""

from __future__ import annotations

import math

import torch

from mdfast.diffusion.base import Objective, sample_t, token_mean, unpack
from mdfast.diffusion.mdlm import mask_tokens, resolve_schedule

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
    acc = torch.promote_types(log_score.dtype, torch.float32)
    r = (1.0 / torch.expm1(sigma.to(acc)))[:, None].expand_as(xt)[masked]
    ls = log_score[masked].to(acc)
    neg = r * ls.gather(-1, x0[masked][:, None]).squeeze(-1)
    score = ls.exp()
    pos = score.sum(-1) - score[:, mask_index]
    ent = torch.zeros(xt.shape, device=xt.device, dtype=acc)
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
        self.schedule = resolve_schedule(schedule)

    def forward(self, batch):
        x0, attn, _ = unpack(batch)
        n = x0.shape[0]
        t = sample_t(n, eps=self.sampling_eps, antithetic=self.antithetic, device=x0.device)
        sigma, dsigma = self.schedule.sigma(t)
        xt = mask_tokens(x0, self.schedule.move_chance(t), self.mask_index)
        logits = self.model(xt, sigma)
        ent = score_entropy(
            sedd_log_score(logits.float(), xt, sigma), sigma, xt, x0, self.mask_index
        )
        loss = token_mean(dsigma[:, None] * ent, attn)
        return loss, {"score_entropy": loss.detach()}
