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
    (mean over them), the only pixels whose value is known. It trains the levels t ≥ t_d;
  * consistency loss (:mod:`~mdfast.experiments.mnist.consistency`): trains the levels s < t_d,
    where no pixel value is known, from the martingale identity
    p(x0 | x_t) = E_{x_s ~ p_θ(x_s | x_t)} p(x0 | x_s): the model at the data's level is the
    teacher (no gradient), the model at x_s (reached by the model's own reverse steps) the
    student; ``role="reversed"`` is the previous variant with the roles the other way round;
  * total: easy + consistency_weight · consistency.

Nothing here reads the value of an unobserved pixel: every objective overwrites them with MASK
before use.

Noise: t and the forward masks are ``Purpose.TIME`` / ``Purpose.MASK`` draws of
:mod:`mdfast.rng` (keyed by seed, step and global sample index under the trainer's NoiseKey),
the consistency loss's draws have purposes of their own.
"""

from __future__ import annotations

import torch
from torch import nn

from mdfast import rng
from mdfast.diffusion.base import Objective, unpack
from mdfast.diffusion.mdlm import MDLM
from mdfast.experiments.mnist.consistency import (
    DIVERGENCES,
    ROLES,
    consistency_loss,
    reversed_consistency_loss,
)
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
        noised = rng.draw(rng.Purpose.MASK, x_obs.shape, device=x_obs.device) < move
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
        role: ``"student"`` (the model at s < t_d learns from the model at t_d) or
            ``"reversed"`` (the previous variant: the model at t_d learns from s = t_d − δ).
        inner_steps: reverse steps from t_d to s (``role="student"``).
        divergence: ``"brier"`` or ``"kl"`` (``role="student"``; see
            :func:`~mdfast.experiments.mnist.consistency.consistency_loss`).
        subsample: the consistency term uses the samples whose index is a multiple of it.
        step_back: δ of ``role="reversed"``.
    """

    kind = "ambient"

    def __init__(
        self,
        model: nn.Module,
        masked_fraction: float | None = None,
        consistency_weight: float = 1.0,
        role: str = "student",
        inner_steps: int = 4,
        divergence: str = "brier",
        subsample: int = 2,
        step_back: float = 0.1,
    ):
        super().__init__(model)
        if masked_fraction is not None and not 0.0 <= masked_fraction < 1.0:
            raise ValueError(
                f"mdfast: argument 'masked_fraction' must be in [0, 1), got {masked_fraction}"
            )
        if role not in ROLES:
            raise ValueError(f"mdfast: option 'role' must be one of {list(ROLES)}, got {role!r}")
        if divergence not in DIVERGENCES:
            raise ValueError(
                f"mdfast: option 'divergence' must be one of {list(DIVERGENCES)}, "
                f"got {divergence!r}"
            )
        for name, value in (("inner_steps", inner_steps), ("subsample", subsample)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"mdfast: option '{name}' must be an integer >= 1, got {value}")
        self.masked_fraction = None if masked_fraction is None else float(masked_fraction)
        self.consistency_weight = float(consistency_weight)
        self.role = role
        self.inner_steps = int(inner_steps)
        self.divergence = divergence
        self.subsample = int(subsample)
        self.step_back = float(step_back)

    def easy_loss(self, x_obs: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        # t_e = t_d + (1 − t_d)·u, u ~ U[ε, 1) (antithetic): hiding each observed pixel with
        # probability (t_e − t_d)/(1 − t_d) = u makes the masked fraction t_e in expectation,
        # whatever the image's own t_d is.
        u = sample_t(x_obs.shape[0], device=x_obs.device)
        hide = rng.draw(rng.Purpose.MASK, x_obs.shape, device=x_obs.device) < u.view(-1, 1, 1)
        hidden = observed & hide
        x_in = x_obs.masked_fill(hidden, MASK)
        per_pixel = pixel_ce(self.model(x_in), x_obs, hidden)
        return per_pixel.sum() / hidden.sum().clamp(min=1)

    def consistency_loss(self, x_obs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.role == "reversed":
            return reversed_consistency_loss(self.model, x_obs, step_back=self.step_back)
        return consistency_loss(
            self.model,
            x_obs,
            inner_steps=self.inner_steps,
            divergence=self.divergence,
            subsample=self.subsample,
        )

    def forward(self, batch):
        x_obs, observed = _corrupted(batch)
        easy = self.easy_loss(x_obs, observed)
        metrics = {"easy": easy.detach()}
        loss = easy
        if self.consistency_weight != 0:
            hard, extra = self.consistency_loss(x_obs)
            loss = loss + self.consistency_weight * hard
            metrics["consistency"] = hard.detach()
            metrics.update({f"consistency_{k}": v.detach() for k, v in extra.items()})
        metrics["loss"] = loss.detach()
        return loss, metrics


def make_objective(
    experiment: str,
    model: nn.Module,
    *,
    masked_fraction: float = 0.9,
    consistency_weight: float = 1.0,
    **ambient_options,
):
    """The objective of ``experiment`` (``baseline``, ``naive`` or ``ambient``) on ``model``;
    ``ambient_options``: the other arguments of :class:`AmbientMDLM` (role, inner_steps, …)."""
    check_experiment(experiment)
    if ambient_options and experiment != "ambient":
        raise ValueError(
            f"mdfast: options {sorted(ambient_options)} are the ambient objective's, not the "
            f"{experiment} experiment's"
        )
    if experiment == "baseline":
        return MDLMBaseline(model)
    if experiment == "naive":
        return NaiveCorrupted(model)
    return AmbientMDLM(
        model,
        masked_fraction=masked_fraction,
        consistency_weight=consistency_weight,
        **ambient_options,
    )
