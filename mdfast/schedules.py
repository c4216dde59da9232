"""Noise schedules of masked diffusion, in one time convention.

mdfast time: ``t = 0`` is data, ``t = 1`` is (almost) all noise. A schedule gives the keep
probability ``alpha(t)`` (a token is still unmasked at time ``t`` with probability ``alpha(t)``),
its derivative, the masking probability ``move_chance(t) = 1 - alpha(t)`` and the continuous-time
NELBO weight of the masked cross-entropy ``loss_weight(t) = -alpha'(t) / (1 - alpha(t))``.

Codebases with the flipped convention (MDM-Prime's image code: ``s = 0`` noise, ``s = 1`` data,
``P(mask) = 1 - s**n``) convert once, with :func:`flip_time`, and then use these schedules
unchanged: ``PolynomialSchedule(n).move_chance(flip_time(s)) == 1 - s**n``.

All methods take a tensor ``t`` and compute in its dtype (pass float64 for exact comparisons);
:func:`alpha_at` is the scalar lookup the samplers use for their time grids.
"""

from __future__ import annotations

import math

import torch

from mdfast import rng

__all__ = [
    "CosineSchedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "PolynomialSchedule",
    "Schedule",
    "alpha_at",
    "flip_time",
    "get_schedule",
    "sample_t",
]


def flip_time(s: torch.Tensor) -> torch.Tensor:
    """Map a time of the flipped convention (0 = noise, 1 = data) to mdfast time (0 = data,
    1 = noise): ``t = 1 - s``. The one place where the two conventions meet."""
    return 1 - s


class Schedule:
    """Base class: subclasses define :meth:`alpha` and :meth:`dalpha`."""

    name = "schedule"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a token is still unmasked at time ``t``."""
        raise NotImplementedError

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """``d alpha / dt`` (<= 0)."""
        raise NotImplementedError

    def move_chance(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a token is masked at time ``t``: ``1 - alpha(t)``."""
        return 1 - self.alpha(t)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Weight of ``-log p(x0 | x_t)`` at masked positions in the continuous-time NELBO:
        ``-alpha'(t) / (1 - alpha(t))``."""
        return -self.dalpha(t) / (1 - self.alpha(t))

    def sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MDLM's noise interface: ``(sigma, dsigma)`` with ``alpha = exp(-sigma)``, so
        ``sigma = -log alpha`` and ``dsigma = -alpha' / alpha``."""
        a = self.alpha(t)
        return -torch.log(a), -self.dalpha(t) / a

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LogLinearSchedule(Schedule):
    """MDLM's ``LogLinearNoise``: ``alpha(t) = 1 - (1 - eps) t`` (so ``sigma(t) =
    -log(1 - (1 - eps) t)``), ``eps = 1e-3`` keeps ``alpha(1) > 0``. Its loss weight
    ``-alpha'/(1 - alpha) = (1 - eps) / ((1 - eps) t)`` is ``1/t`` exactly, which
    :meth:`loss_weight` returns (MDLM computes the same number as ``dsigma / expm1(sigma)``)."""

    name = "loglinear"

    def __init__(self, eps: float = 1e-3):
        if not 0 <= eps < 1:
            raise ValueError(f"mdfast: argument 'eps' must be in [0, 1), got {eps}")
        self.eps = float(eps)

    def alpha(self, t):
        return 1 - (1 - self.eps) * t

    def dalpha(self, t):
        return torch.full_like(t, -(1 - self.eps))

    def loss_weight(self, t):
        return 1 / t

    def __repr__(self) -> str:
        return f"LogLinearSchedule(eps={self.eps})"


class LinearSchedule(LogLinearSchedule):
    """``alpha(t) = 1 - t`` (the log-linear schedule with ``eps = 0``; MDLM's cached sampler and
    ReMDM use this form). Loss weight ``1/t``."""

    name = "linear"

    def __init__(self):
        super().__init__(eps=0.0)

    def __repr__(self) -> str:
        return "LinearSchedule()"


class CosineSchedule(Schedule):
    """``alpha(t) = 1 - sin(pi t / 2)``: the masked fraction ``sin(pi t / 2)`` is MaskGIT's cosine
    ratio and the discrete-interpolant ``kappa(s) = 1 - cos(pi s / 2)`` at ``s = 1 - t``
    (MD4's cosine). Loss weight ``(pi/2) cot(pi t / 2)``."""

    name = "cosine"

    def alpha(self, t):
        return 1 - torch.sin(0.5 * math.pi * t)

    def dalpha(self, t):
        return -0.5 * math.pi * torch.cos(0.5 * math.pi * t)


class PolynomialSchedule(Schedule):
    """``alpha(t) = (1 - t)^n``: MDM-Prime's image schedule ``P(mask) = 1 - s^n`` written in
    mdfast time (``s = flip_time(t) = 1 - t``). Loss weight ``n (1-t)^(n-1) / (1 - (1-t)^n)``;
    ``n = 1`` is :class:`LinearSchedule`."""

    name = "polynomial"

    def __init__(self, n: float = 1.0):
        if not n > 0:
            raise ValueError(f"mdfast: argument 'n' must be > 0, got {n}")
        self.n = float(n)

    def alpha(self, t):
        return (1 - t) ** self.n

    def dalpha(self, t):
        return -self.n * (1 - t) ** (self.n - 1)

    def __repr__(self) -> str:
        return f"PolynomialSchedule(n={self.n})"


_SCHEDULES = {
    "loglinear": LogLinearSchedule,
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "polynomial": PolynomialSchedule,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """Schedule by name: ``loglinear`` (eps), ``linear``, ``cosine``, ``polynomial`` (n)."""
    try:
        cls = _SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"mdfast: argument 'name' must be one of {sorted(_SCHEDULES)}, got {name!r}"
        ) from None
    return cls(**kwargs)


def alpha_at(t: float, schedule: Schedule | str) -> float:
    """alpha(t) as a Python float for one time ``t``, for a schedule name of :func:`get_schedule`
    (``"loglinear"``, ``"linear"``, ``"cosine"``, ``"polynomial"``) or a :class:`Schedule`
    (computed in float64)."""
    sched = get_schedule(schedule) if isinstance(schedule, str) else schedule
    if not isinstance(sched, Schedule):
        raise ValueError(
            f"mdfast: argument 'schedule' must be a schedule name or Schedule, got {schedule!r}"
        )
    if isinstance(sched, LogLinearSchedule):  # affine in t: no tensor round trip
        return float(sched.alpha(t))
    return float(sched.alpha(torch.tensor(t, dtype=torch.float64)))


def sample_t(
    n: int,
    *,
    eps: float = 1e-3,
    antithetic: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """MDLM's ``_sample_t``: ``u ~ U(0, 1)^n``; with ``antithetic`` (stratified) one ``u`` per
    stratum; then ``t = (1 - eps) u + eps`` so ``t`` lies in ``[eps, 1]``.

    The uniforms are :data:`mdfast.rng.Purpose.TIME` noise: keyed by the active
    :class:`mdfast.rng.NoiseKey` (strata over the *global* batch, ``u_g = (v_g + g) / B``) when
    one is active and no ``generator`` is given, else ``torch.rand`` with
    ``u_i = (v_i / n + i / n) mod 1``."""
    if antithetic:
        u = rng.stratified(rng.Purpose.TIME, n, device=device, dtype=dtype, generator=generator)
    else:
        u = rng.draw(rng.Purpose.TIME, n, device=device, dtype=dtype, generator=generator)
    return (1 - eps) * u + eps
