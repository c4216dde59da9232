"""Discrete interpolants ("[MASK] is All You Need"): t = 0 all mask, t = 1 data.

x_t keeps each data token with prob κ(t) and is the mask otherwise; the loss is the cross-entropy
of the logits against the data averaged over masked positions only (``mask_ce``), no ELBO weight.
Class conditioning: a ``"label"`` in the batch is passed to the model as ``y``; with prob
``p_uncond`` it is replaced by the null class (``num_classes``) for classifier-free guidance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mdfast import rng
from mdfast.diffusion.base import Objective, unpack

__all__ = ["KAPPAS", "Interpolant", "check_kappa", "dkappa", "kappa"]


KAPPAS = ("cosine", "linear")


def check_kappa(kind: str) -> None:
    if kind not in KAPPAS:
        raise ValueError(f"mdfast: unknown kappa '{kind}'; valid: {list(KAPPAS)}")


def kappa(t: torch.Tensor, kind: str = "linear") -> torch.Tensor:
    """κ(t), the probability that a data token is kept at time t: ``linear`` κ = t, ``cosine``
    κ = 1 − cos(πt/2)."""
    check_kappa(kind)
    if kind == "linear":
        return t
    return 1 - torch.cos(0.5 * math.pi * t)


def dkappa(t: torch.Tensor, kind: str = "linear") -> torch.Tensor:
    """dκ/dt: 1 (``linear``), (π/2)·sin(πt/2) (``cosine``)."""
    check_kappa(kind)
    if kind == "linear":
        return torch.ones_like(t)
    return 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


class Interpolant(Objective):
    """The masked CE of the discrete interpolant (module docstring). ``kappa``: the name of the
    keep schedule κ (one of :data:`KAPPAS`); ``t_min``: t ~ U[t_min, 1]; ``p_uncond``: the
    probability of the null class ``num_classes`` for classifier-free guidance (0 classes:
    unconditional)."""

    def __init__(
        self,
        model,
        mask_index: int,
        kappa: str = "linear",
        t_min: float = 1e-3,
        p_uncond: float = 0.1,
        num_classes: int = 0,
    ):
        super().__init__(model)
        self.mask_index = mask_index
        check_kappa(kappa)
        self.kappa = kappa
        self.t_min = t_min
        self.p_uncond = p_uncond
        self.num_classes = num_classes

    def forward(self, batch):
        x1, _, rest = unpack(batch)
        b = x1.shape[0]
        dev = x1.device
        t = self.t_min + (1 - self.t_min) * rng.draw(rng.Purpose.TIME, b, device=dev)
        k = kappa(t, self.kappa).reshape(-1, *([1] * (x1.dim() - 1)))
        keep = rng.draw(rng.Purpose.MASK, x1.shape, device=dev) < k
        xt = torch.where(keep, x1, self.mask_index)
        if "label" in rest and self.num_classes > 0:
            y = rest["label"].clone()
            drop = rng.draw(rng.Purpose.LABEL_DROP, b, device=dev) < self.p_uncond
            y[drop] = self.num_classes
            logits = self.model(xt, y=y)
        else:
            logits = self.model(xt)
        masked = ~keep
        # logits: [B, ..., V] with the same leading shape as x1
        ce = F.cross_entropy(logits[masked].float(), x1[masked], reduction="sum")
        loss = ce / masked.sum().clamp_min(1)
        return loss, {"masked_ce": loss.detach()}
