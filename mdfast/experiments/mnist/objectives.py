"""Masked diffusion on binarized MNIST: the clean MDLM baseline, the naive baseline on corrupted
data, and the ambient objective (easy + consistency losses).

Tokens are {0, 1, MASK} (:mod:`mdfast.experiments.mnist.data`); a denoiser maps int64 tokens
[B, 28, 28] to logits [B, 28, 28, 3] whose mask class is excluded (SUBS). Every objective below
reduces to the per-pixel masked cross-entropy ``w · (logsumexp_{v ≠ MASK} z_v − z_target)``,
computed by one call of :func:`pixel_ce` (``mdfast.ops.masked_ce``).

Objectives (each a module with ``loss(batch) -> (loss, metrics)``):

- :class:`MDLMBaseline` — :class:`mdfast.diffusion.MDLM` with the mask id of the pixel tokens:
  MDLM's continuous-time SUBS NELBO on clean digits ``x0``: t ~ U[ε_t, 1] (antithetic over the
  batch), each pixel masked with prob 1 − α_t, loss = mean over pixels of 1[masked] · w(t) · CE,
  with w(t) = −α'_t/(1 − α_t) (= 1/t for the log-linear schedule).
- :class:`NaiveCorrupted` — the same MDLM loss on corrupted data ``(x_obs, observed)``, treating
  the unobserved pixels as masked: x_t = x_obs masked further at t; only pixels that are observed
  and masked by the diffusion carry loss (mean over observed pixels).
- :class:`AmbientMDLM` — data observed with masked fraction t_d:
  * easy loss: draw a total masked fraction t_e ~ U(t_d, 1) and hide each observed pixel with
    prob (t_e − t_d)/(1 − t_d), so the input's masked fraction is t_e in expectation (the seed fed
    t_e but actually masked t_d + (1 − t_d)·t_e); CE on the observed-but-now-hidden pixels only
    (mean over them), the only pixels whose value is known;
  * consistency loss: the student is the model at the data (x_obs, noise level t_d), with
    gradient. Without gradient: x̂ ~ p_θ(· | x_obs); a reverse step to s = max(t_d − δ, s_min)
    keeps each masked pixel masked with prob s/t_d (the exact stay-masked probability) and reveals
    the others with their x̂ value; the teacher is the same model at that x_s. The target of
    masked pixel i is one-hot(x̂_i) where it was revealed and p_θ(x0_i | x_s) where it stayed
    masked — a one-sample estimate of E_{x_s}[p(x0_i | x_s)] = p(x0_i | x_obs) (the martingale
    property). Loss: soft-target CE of the student against it, mean over masked pixels.
    (The seed revealed the pixels it meant to keep masked and vice versa, and flagged the wrong
    set as masked; fixed here.)
  * total: easy + consistency_weight · consistency.

Nothing here reads the value of an unobserved pixel: every objective overwrites them with MASK
before use.
"""

from __future__ import annotations

import torch
from torch import nn

from mdfast.diffusion.base import Objective, unpack
from mdfast.diffusion.mdlm import MDLM
from mdfast.experiments.mnist.data import MASK
from mdfast.experiments.mnist.presets import check_experiment
from mdfast.ops import masked_ce
from mdfast.schedules import LogLinearSchedule, sample_t

__all__ = ["AmbientMDLM", "MDLMBaseline", "NaiveCorrupted", "make_objective", "pixel_ce"]

# The items of a corrupted-digit tuple batch after x_obs (CorruptedMNIST's item layout).
_CORRUPTED_FIELDS = ("observed", "label")


def pixel_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-pixel weighted CE with the mask class excluded; logits [..., 3], target/weight [...].

    Pixels with weight 0 are not read (their target may be anything in range)."""
    return masked_ce(
        logits.reshape(-1, logits.shape[-1]),
        target.reshape(-1),
        weight.reshape(-1).float(),
        exclude_index=MASK,
    ).view(target.shape)


def _corrupted(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_obs with every unobserved pixel set to MASK, observed) of a corrupted-digit batch: a
    tuple ``(x_obs, observed, ...)`` or a dict with ``input_ids`` and ``observed``."""
    x_obs, _, rest = unpack(batch, _CORRUPTED_FIELDS)
    observed = rest["observed"]
    return x_obs.masked_fill(~observed, MASK), observed


class MDLMBaseline(MDLM):
    """MDLM's SUBS NELBO on clean binarized digits (:class:`mdfast.diffusion.MDLM` with
    ``mask_index = MASK``). ``batch``: x0 int64 [B, 28, 28], a tuple ``(x0, label)`` or a dict.
    Metrics: MDLM's, plus ``loss``."""

    kind = "baseline"

    def __init__(self, model: nn.Module, schedule=None):
        super().__init__(model, mask_index=MASK, schedule=schedule)

    def forward(self, batch):
        loss, metrics = super().forward(batch)
        return loss, {**metrics, "loss": loss.detach()}


class NaiveCorrupted(Objective):
    """Plain MDLM on corrupted data: unobserved pixels are just more masked pixels.
    ``batch``: ``(x_obs, observed, ...)`` as from
    :class:`~mdfast.experiments.mnist.data.CorruptedMNIST` (or a dict with ``observed``)."""

    kind = "naive"

    def __init__(self, model: nn.Module, schedule=None):
        super().__init__(model)
        self.schedule = LogLinearSchedule() if schedule is None else schedule

    def forward(self, batch):
        x_obs, observed = _corrupted(batch)
        t = sample_t(x_obs.shape[0], device=x_obs.device)
        move = self.schedule.move_chance(t).view(-1, 1, 1)
        noised = torch.rand(x_obs.shape, device=x_obs.device) < move
        xt = x_obs.masked_fill(noised, MASK)
        # MDLM's SUBS term, restricted to pixels whose value is known.
        weight = (noised & observed) * self.schedule.loss_weight(t).view(-1, 1, 1)
        per_pixel = pixel_ce(self.model(xt), x_obs, weight)
        loss = per_pixel.sum() / observed.sum().clamp(min=1)
        return loss, {"loss": loss.detach()}


class AmbientMDLM(Objective):
    """Ambient training on data observed with masked fraction ``masked_fraction`` (t_d).

    Args:
        model: the denoiser.
        masked_fraction: the data's masked fraction t_d, in [0, 1), kept as a record (``None``:
            not given); both losses read each image's own noise level from its mask.
        consistency_weight: λ in easy + λ · consistency (the seed's ``--consistency_weight``).
        step_back: δ, the teacher's noise level is s = max(t_d − δ, min_teacher_level).
        min_teacher_level: floor of s.
    """

    kind = "ambient"

    def __init__(
        self,
        model: nn.Module,
        masked_fraction: float | None = None,
        consistency_weight: float = 1.0,
        step_back: float = 0.1,
        min_teacher_level: float = 1e-3,
    ):
        super().__init__(model)
        if masked_fraction is not None and not 0.0 <= masked_fraction < 1.0:
            raise ValueError(
                f"mdfast: argument 'masked_fraction' must be in [0, 1), got {masked_fraction}"
            )
        self.masked_fraction = None if masked_fraction is None else float(masked_fraction)
        self.consistency_weight = float(consistency_weight)
        self.step_back = float(step_back)
        self.min_teacher_level = float(min_teacher_level)

    def easy_loss(self, x_obs: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        # t_e = t_d + (1 − t_d)·u, u ~ U[ε, 1) (antithetic): hiding each observed pixel with
        # probability (t_e − t_d)/(1 − t_d) = u makes the masked fraction t_e in expectation,
        # whatever the image's own t_d is.
        u = sample_t(x_obs.shape[0], device=x_obs.device)
        hidden = observed & (torch.rand(x_obs.shape, device=x_obs.device) < u.view(-1, 1, 1))
        x_in = x_obs.masked_fill(hidden, MASK)
        per_pixel = pixel_ce(self.model(x_in), x_obs, hidden)
        return per_pixel.sum() / hidden.sum().clamp(min=1)

    def consistency_loss(self, x_obs: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        masked = ~observed
        if not masked.any():
            return x_obs.new_zeros((), dtype=torch.float32)
        student = self.model(x_obs)
        t = masked.flatten(1).float().mean(1).clamp(min=1e-6)  # the realised data noise level
        s = (t - self.step_back).clamp(min=self.min_teacher_level)
        with torch.no_grad():
            logits = student.detach().float()
            logits[..., MASK] = float("-inf")
            p1 = logits.softmax(-1)[..., 1]
            x_hat = (torch.rand_like(p1) < p1).long()
            stay = masked & (torch.rand(x_obs.shape, device=x_obs.device) < (s / t).view(-1, 1, 1))
            x_s = torch.where(masked & ~stay, x_hat, x_obs)
            teacher = self.model(x_s).float()
            teacher[..., MASK] = float("-inf")
            q1 = torch.where(stay, teacher.softmax(-1)[..., 1], x_hat.float())
        # Soft-target CE = q1·CE(target 1) + (1 − q1)·CE(target 0): one call over both halves.
        ones = torch.ones_like(x_obs)
        per_pixel = pixel_ce(
            torch.cat([student, student]),
            torch.cat([ones, 1 - ones]),
            torch.cat([q1 * masked, (1 - q1) * masked]),
        )
        return per_pixel.sum() / masked.sum()

    def forward(self, batch):
        x_obs, observed = _corrupted(batch)
        easy = self.easy_loss(x_obs, observed)
        metrics = {"easy": easy.detach()}
        loss = easy
        if self.consistency_weight != 0:
            hard = self.consistency_loss(x_obs, observed)
            loss = loss + self.consistency_weight * hard
            metrics["consistency"] = hard.detach()
        metrics["loss"] = loss.detach()
        return loss, metrics


def make_objective(
    experiment: str,
    model: nn.Module,
    *,
    masked_fraction: float = 0.9,
    consistency_weight: float = 1.0,
):
    """The objective of ``experiment`` (``baseline``, ``naive`` or ``ambient``) on ``model``."""
    check_experiment(experiment)
    if experiment == "baseline":
        return MDLMBaseline(model)
    if experiment == "naive":
        return NaiveCorrupted(model)
    return AmbientMDLM(
        model, masked_fraction=masked_fraction, consistency_weight=consistency_weight
    )
