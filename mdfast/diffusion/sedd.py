"""SEDD absorbing-state score entropy (MDLM's ``_sedd_parameterization`` + ``_score_entropy``)."""

from __future__ import annotations

import math

import torch

from mdfast import ops
from mdfast.diffusion.base import Objective, sample_t, token_mean, unpack
from mdfast.diffusion.mdlm import mask_tokens, resolve_schedule

__all__ = ["SEDD", "fused_score_entropy", "score_entropy", "sedd_log_score"]


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


def fused_score_entropy(hidden, weight, bias, xt, x0, sigma, mask_index: int) -> torch.Tensor:
    """:func:`score_entropy` of the log score of logits ``hidden @ weight.T + bias`` without
    forming the logits: only masked rows are projected, a chunk at a time, by
    :func:`mdfast.ops.linear_masked_ce`.

    With c = log(e^σ − 1) + log(V − 1), log s(y) = z_y − c, so
    Σ_{y≠m} s(y) = exp(lse' − c) with lse' = logsumexp_{y≠m} z, and the entropy is
    exp(lse' − c) − r(z_{x0} − c) + r(log r − 1). The op gives CE = lse' − z_{x0} (gradient
    softmax' − onehot), and z_{x0} is one dot product per row, so lse' = CE + z_{x0} carries the
    exact gradient softmax'.
    """
    masked = xt == mask_index
    acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    out = torch.zeros(xt.shape, device=xt.device, dtype=acc)
    if not bool(masked.any()):
        return out + 0 * hidden.sum()  # keeps every parameter in the graph (DDP)
    h = hidden[masked]
    tgt = x0[masked]
    ce = ops.linear_masked_ce(
        h, weight, bias, tgt, torch.ones(len(tgt), device=h.device, dtype=torch.float32),
        exclude_index=mask_index,
    )  # fmt: skip
    z = (h.to(acc) * weight[tgt].to(acc)).sum(-1)
    if bias is not None:
        z = z + bias[tgt].to(acc)
    lse = ce.to(acc) + z
    sig = sigma.to(acc)[:, None].expand_as(xt)[masked]
    esigm1 = torch.where(sig < 0.5, torch.expm1(sig), sig.exp() - 1)
    c = esigm1.log() + math.log(weight.shape[0] - 1)
    r = 1.0 / esigm1
    out[masked] = (lse - c).exp() - r * (z - c) + r * (r.log() - 1)
    return out


class SEDD(Objective):
    """Loss = token mean of dσ/dt · score_entropy, σ = −log α_t (time-conditioned backbone).

    ``fused``: the backbone's trunk, then :func:`fused_score_entropy` (logits only for masked
    rows, a chunk at a time); needs ``model.trunk`` / ``head_weight`` / ``head_bias``."""

    def __init__(
        self,
        model,
        mask_index: int,
        antithetic: bool = True,
        sampling_eps: float = 1e-3,
        schedule=None,
        fused: bool = False,
    ):
        super().__init__(model)
        self.mask_index = mask_index
        self.antithetic = antithetic
        self.sampling_eps = sampling_eps
        self.schedule = resolve_schedule(schedule)
        self.fused = fused

    def per_token(self, x0, xt, t, sigma) -> torch.Tensor:
        """dσ/dt · score entropy per token [B, L] (0 at unmasked positions)."""
        _, dsigma = self.schedule.sigma(t)
        if self.fused:
            hidden = self.model.trunk(xt, sigma)
            w, b = self.model.head_weight, self.model.head_bias
            dev = hidden.device.type
            dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else w.dtype
            ent = fused_score_entropy(
                hidden.to(dtype), w.to(dtype), None if b is None else b.to(dtype), xt, x0,
                sigma, self.mask_index,
            )  # fmt: skip
        else:
            logits = self.model(xt, sigma)
            ent = score_entropy(
                sedd_log_score(logits.float(), xt, sigma), sigma, xt, x0, self.mask_index
            )
        return dsigma.to(ent.dtype)[:, None] * ent

    def forward(self, batch):
        x0, attn, _ = unpack(batch)
        n = x0.shape[0]
        t = sample_t(n, eps=self.sampling_eps, antithetic=self.antithetic, device=x0.device)
        sigma, _ = self.schedule.sigma(t)
        xt = mask_tokens(x0, self.schedule.move_chance(t), self.mask_index)
        loss = token_mean(self.per_token(x0, xt, t, sigma), attn)
        return loss, {"score_entropy": loss.detach()}
