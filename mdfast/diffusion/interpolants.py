"""Discrete interpolants ("[MASK] is All You Need"): time s runs from 0 (source) to 1 (data).

Forward process, per token, for data x₁ and a source x₀ drawn by the coupling:

    p_s = (1 − κ(s))·δ_{x₀} + κ(s)·δ_{x₁}                      (then one draw per token)

* ``coupling="ucoupling"``: x₀ is all mask; ``"ccoupling"``: each token of x₀ is the data token
  with probability ``1 − coupling_mask_prob`` (default 0.2 kept) and the mask otherwise.
* ``smooth = c > 0`` (the seed's ``linear_smooth``): ε = √(c·s(1−s)) is added to every one of the
  V entries of p_s before the draw, so with probability Vε/(1 + Vε) the token is uniform over the
  whole vocabulary (the mask included) — drawn exactly, without a V-sized buffer.
* s ~ U[t_min, 1] per sample; κ is any schedule of :data:`mdfast.schedules.KAPPA_SCHEDULES`.

Loss: cross-entropy of the logits against x₁ with the mask class left out of the softmax, through
the fused :func:`mdfast.ops.masked_ce` (per-row weights; rows of weight 0 are never read):

* ``mask_ce=True``: Σ_masked w(s)·CE / (number of masked tokens in the batch), masked = x_s is the
  mask; ``mask_ce=False``: the mean over all tokens;
* ``elbo=True`` (needs ``mask_ce``): w(s) = κ'(s)/(1 − κ(s)) (:func:`mdfast.schedules.kappa_rate`)
  times, with ``sigmoid_shift = k``, sigmoid(log(κ/(1 − κ)) − k), else w = 1. (The seed reads an
  SNR that no scheduler defines; log κ/(1 − κ) is the log signal-to-noise of the mask process.)

Conditioning: a batch ``"label"`` is passed as ``y`` when ``num_classes > 0`` (the null class is
``num_classes``); a batch ``"context"`` (e.g. [B, 77, 768] CLIP tokens) is passed as ``context``
and its null version is the model's ``null_context``. With probability ``p_uncond`` a sample's
condition is replaced by the null one (label drop for classifier-free guidance). A model whose
``config.time_cond`` is true also gets ``t=s``.

Every random draw (s, coupling, corruption, label drop) is keyed noise (:func:`mdfast.rng.draw`,
one stream per purpose): (seed, purpose, global step, global sample index) under the trainer's
active :class:`mdfast.rng.NoiseKey`, torch's RNG otherwise.
"""

from __future__ import annotations

import math

import torch

from mdfast import ops, rng
from mdfast.diffusion.base import Objective, unpack
from mdfast.schedules import KAPPA_SCHEDULES, dkappa, kappa, kappa_rate, kappa_schedule

__all__ = ["COUPLINGS", "KAPPAS", "Interpolant", "dkappa", "kappa", "kappa_rate"]

KAPPAS = tuple(KAPPA_SCHEDULES)
COUPLINGS = ("ucoupling", "ccoupling")
_COUPLING = "coupling"  # the keyed-noise purpose of ccoupling's source masks


def _check_prob(value, name: str, *, open_low: bool = False) -> float:
    value = float(value)
    ok = (0.0 < value <= 1.0) if open_low else (0.0 <= value <= 1.0)
    if not ok or math.isnan(value):
        bound = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"mdfast: argument '{name}' must be in {bound}, got {value}")
    return value


class Interpolant(Objective):
    """The discrete-interpolant objective (module docstring).

    Args:
        model: ``model(x_s, **cond) -> logits [*x.shape, V]`` with V > ``mask_index``.
        mask_index: the mask token id (the last id of the vocabulary in the seed).
        kappa: name of the κ schedule (``linear`` = the seed's ``dynamic=linear``).
        t_min: s ~ U[t_min, 1].
        p_uncond: probability of the null condition (classifier-free guidance).
        num_classes: class-conditional with labels in [0, num_classes) (0: labels ignored).
        coupling: ``ucoupling`` or ``ccoupling``; ``coupling_mask_prob``: ccoupling's probability
            that a source token is the mask (the seed's ``msk_prop``).
        smooth: c ≥ 0 of the smoothed corruption.
        mask_ce, elbo, sigmoid_shift: the loss options (module docstring).
    """

    def __init__(
        self,
        model,
        mask_index: int,
        kappa: str = "linear",
        t_min: float = 1e-3,
        p_uncond: float = 0.1,
        num_classes: int = 0,
        coupling: str = "ucoupling",
        coupling_mask_prob: float = 0.8,
        smooth: float = 0.0,
        mask_ce: bool = True,
        elbo: bool = False,
        sigmoid_shift: float | None = None,
    ):
        super().__init__(model)
        if isinstance(mask_index, bool) or not isinstance(mask_index, int) or mask_index < 0:
            raise ValueError(f"mdfast: argument 'mask_index' must be an int >= 0, got {mask_index}")
        kappa_schedule(kappa)  # validates the name
        if coupling not in COUPLINGS:
            raise ValueError(
                f"mdfast: argument 'coupling' must be one of {list(COUPLINGS)}, got {coupling!r}"
            )
        if not 0.0 <= float(t_min) < 1.0:
            raise ValueError(f"mdfast: argument 't_min' must be in [0, 1), got {t_min}")
        if not float(smooth) >= 0.0:
            raise ValueError(f"mdfast: argument 'smooth' must be >= 0, got {smooth}")
        if elbo and not mask_ce:
            raise ValueError("mdfast: 'elbo=True' weights the masked CE: it needs 'mask_ce=True'")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(
                f"mdfast: argument 'num_classes' must be an int >= 0, got {num_classes}"
            )
        self.mask_index = mask_index
        self.kappa = kappa
        self.t_min = float(t_min)
        self.p_uncond = _check_prob(p_uncond, "p_uncond")
        self.num_classes = num_classes
        self.coupling = coupling
        self.coupling_mask_prob = _check_prob(coupling_mask_prob, "coupling_mask_prob")
        self.smooth = float(smooth)
        self.mask_ce = bool(mask_ce)
        self.elbo = bool(elbo)
        self.sigmoid_shift = None if sigmoid_shift is None else float(sigmoid_shift)

    # --- the forward process -----------------------------------------------------------------

    def sample_time(self, b: int, device) -> torch.Tensor:
        """s ~ U[t_min, 1], float32 [b]."""
        return self.t_min + (1 - self.t_min) * rng.draw(rng.Purpose.TIME, b, device=device)

    def source(self, x1: torch.Tensor) -> torch.Tensor:
        """x₀ of the coupling: all mask (ucoupling) or x₁ with each token masked with probability
        ``coupling_mask_prob`` (ccoupling)."""
        if self.coupling == "ucoupling":
            return torch.full_like(x1, self.mask_index)
        masked = rng.draw(_COUPLING, x1.shape, device=x1.device) < self.coupling_mask_prob
        return torch.where(masked, self.mask_index, x1)

    def corrupt(self, x0: torch.Tensor, x1: torch.Tensor, s: torch.Tensor, vocab_size: int):
        """One draw of x_s from p_s (module docstring) with one uniform u per token: x₁ when
        u < κ/Z, x₀ when u < 1/Z, else the class ⌊(u − 1/Z)·Z/ε⌋ (Z = 1 + Vε; ε = 0, Z = 1
        without smoothing)."""
        shape = (-1, *([1] * (x1.dim() - 1)))
        k = kappa(s.double(), self.kappa).reshape(shape)
        u = rng.draw(rng.Purpose.MASK, x1.shape, device=x1.device, dtype=torch.float64)
        if self.smooth == 0.0:
            return torch.where(u < k, x1, x0)
        sd = s.double().reshape(shape)
        eps = torch.sqrt(self.smooth * sd * (1 - sd))
        z = 1 + vocab_size * eps
        uniform_class = ((u - 1 / z) * z / eps.clamp_min(1e-300)).floor().clamp(0, vocab_size - 1)
        xs = torch.where(u < 1 / z, x0, uniform_class.long())
        return torch.where(u < k / z, x1, xs)

    def _conditioning(self, rest: dict, b: int, device) -> dict:
        cond = {}
        label = rest.get("label") if self.num_classes > 0 else None
        context = rest.get("context")
        if label is None and context is None:
            return cond
        drop = rng.draw(rng.Purpose.LABEL_DROP, b, device=device) < self.p_uncond
        if label is not None:
            cond["y"] = torch.where(drop, self.num_classes, label.to(device))
        if context is not None:
            null = getattr(self.model, "null_context", None)
            if null is None:
                raise ValueError(
                    "mdfast: the batch has a 'context' but the model has no 'null_context' for "
                    "label drop (a U-ViT needs context_dim > 0)"
                )
            cond["context"] = torch.where(drop[:, None, None], null.to(context.dtype), context)
        return cond

    def _wants_time(self) -> bool:
        return bool(getattr(getattr(self.model, "config", None), "time_cond", False))

    # --- the loss ------------------------------------------------------------------------------

    def row_weights(self, xs: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """float64 [N]: the masked_ce weight of every token (the loss is their weighted sum)."""
        n = xs.numel()
        if not self.mask_ce:
            return torch.full((n,), 1.0 / max(n, 1), dtype=torch.float64, device=xs.device)
        masked = (xs == self.mask_index).reshape(xs.shape[0], -1).double()
        w = masked / masked.sum().clamp_min(1.0)
        if self.elbo:
            sd = s.double()
            w = w * kappa_rate(sd, self.kappa)[:, None]
            if self.sigmoid_shift is not None:
                k = kappa(sd, self.kappa)
                w = w * torch.sigmoid(torch.log(k) - torch.log1p(-k) - self.sigmoid_shift)[:, None]
        return w.reshape(-1)

    def forward(self, batch):
        x1, _, rest = unpack(batch)
        b, dev = x1.shape[0], x1.device
        s = self.sample_time(b, dev)
        x0 = self.source(x1)
        cond = self._conditioning(rest, b, dev)
        if self._wants_time():
            cond["t"] = s
        xs = self.corrupt(x0, x1, s, self._vocab_size())
        logits = self.model(xs, **cond)
        v = logits.shape[-1]
        weight = self.row_weights(xs, s)
        if logits.dtype != torch.float64:
            weight = weight.float()
        loss = ops.masked_ce(
            logits.reshape(-1, v), x1.reshape(-1), weight, exclude_index=self.mask_index
        ).sum()
        masked_frac = (xs == self.mask_index).float().mean()
        return loss, {"masked_ce": loss.detach(), "mask_frac": masked_frac.detach()}

    def _vocab_size(self) -> int:
        if self.smooth == 0.0:
            return self.mask_index + 1  # unused without smoothing
        cfg = getattr(self.model, "config", None)
        v = getattr(cfg, "vocab_size", None) or getattr(self.model, "vocab_size", None)
        if not v:
            raise ValueError(
                "mdfast: 'smooth > 0' draws uniform tokens over the vocabulary: the model must "
                "expose config.vocab_size or vocab_size"
            )
        return int(v)
