"""Noise schedules of masked diffusion, in one time convention.

mdfast time: ``t = 0`` is data, ``t = 1`` is (almost) all noise. A schedule gives the keep
probability ``alpha(t)`` (a token is still unmasked at time ``t`` with probability ``alpha(t)``),
its derivative, the masking probability ``move_chance(t) = 1 - alpha(t)`` and the continuous-time
NELBO weight of the masked cross-entropy ``loss_weight(t) = -alpha'(t) / (1 - alpha(t))``.

Codebases with the flipped convention (MDM-Prime's image code: ``s = 0`` noise, ``s = 1`` data,
``P(mask) = 1 - s**n``) convert once, with :func:`flip_time`, and then use these schedules
unchanged: ``PolynomialSchedule(n).move_chance(flip_time(s)) == 1 - s**n``.

Discrete interpolants ("[MASK] is All You Need") run the other way too: ``s = 0`` all mask,
``s = 1`` data, and their schedule ``kappa(s)`` is the probability that a token shows its data
value. So ``kappa(s) = alpha(flip_time(s))``: every kappa schedule of that codebase is a schedule
here, named in :data:`KAPPA_SCHEDULES` and read through :func:`kappa`, :func:`dkappa` and
:func:`kappa_rate` (= ``kappa'/(1 - kappa)``, the CTMC unmasking rate and ELBO weight).

All methods take a tensor ``t`` and compute in its dtype (pass float64 for exact comparisons);
:func:`alpha_at` is the scalar lookup the samplers use for their time grids.
"""

from __future__ import annotations

import math

import torch

from mdfast import rng

__all__ = [
    "KAPPA_SCHEDULES",
    "ArccosSchedule",
    "ArcsinSchedule",
    "CosineSchedule",
    "CubicSchedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "PolynomialSchedule",
    "Schedule",
    "SineSchedule",
    "alpha_at",
    "dkappa",
    "flip_time",
    "get_schedule",
    "kappa",
    "kappa_rate",
    "kappa_schedule",
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


class SineSchedule(Schedule):
    """``alpha(t) = cos(pi t / 2)``: the interpolants' ``sine`` kappa ``sin(pi s / 2)``. Loss
    weight ``(pi/2) sin(pi t / 2) / (1 - cos(pi t / 2))``."""

    name = "sine"

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * t)

    def dalpha(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


class ArccosSchedule(Schedule):
    """``alpha(t) = 1 - (2/pi) arccos(1 - t)``: the interpolants' ``arccos`` kappa
    ``1 - (2/pi) arccos(s)``. ``alpha'(t) = -(2/pi) / sqrt(1 - (1 - t)^2)`` is infinite at
    ``t = 0`` (the seed adds 1e-6 under the root; this is the exact derivative)."""

    name = "arccos"

    def alpha(self, t):
        return 1 - (2 / math.pi) * torch.acos(1 - t)

    def dalpha(self, t):
        return -(2 / math.pi) / torch.sqrt(t * (2 - t))


class ArcsinSchedule(Schedule):
    """``alpha(t) = (2/pi) arcsin(1 - t)``: the interpolants' ``arcsin`` kappa
    ``(2/pi) arcsin(s)``, ``alpha'(t) = -(2/pi) / sqrt(1 - (1 - t)^2)``."""

    name = "arcsin"

    def alpha(self, t):
        return (2 / math.pi) * torch.asin(1 - t)

    def dalpha(self, t):
        return -(2 / math.pi) / torch.sqrt(t * (2 - t))


class CubicSchedule(Schedule):
    """The interpolants' ``cubic`` kappa, the Hermite cubic from 0 to 1 with end slopes ``a``
    (at s = 0) and ``b`` (at s = 1): ``kappa(s) = -2s^3 + 3s^2 + a(s^3 - 2s^2 + s) + b(s^3 - s^2)``
    (defaults a = 2, b = 0.5), here as ``alpha(t) = kappa(1 - t)``."""

    name = "cubic"

    def __init__(self, a: float = 2.0, b: float = 0.5):
        self.a, self.b = float(a), float(b)

    def _kappa(self, s):
        a, b = self.a, self.b
        return -2 * s**3 + 3 * s**2 + a * (s**3 - 2 * s**2 + s) + b * (s**3 - s**2)

    def _dkappa(self, s):
        a, b = self.a, self.b
        return -6 * s**2 + 6 * s + a * (3 * s**2 - 4 * s + 1) + b * (3 * s**2 - 2 * s)

    def alpha(self, t):
        return self._kappa(1 - t)

    def dalpha(self, t):
        return -self._dkappa(1 - t)

    def __repr__(self) -> str:
        return f"CubicSchedule(a={self.a}, b={self.b})"


_SCHEDULES = {
    "loglinear": LogLinearSchedule,
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "polynomial": PolynomialSchedule,
    "sine": SineSchedule,
    "arccos": ArccosSchedule,
    "arcsin": ArcsinSchedule,
    "cubic": CubicSchedule,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """Schedule by name: ``loglinear`` (eps), ``linear``, ``cosine``, ``polynomial`` (n),
    ``sine``, ``arccos``, ``arcsin``, ``cubic`` (a, b)."""
    try:
        cls = _SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"mdfast: argument 'name' must be one of {sorted(_SCHEDULES)}, got {name!r}"
        ) from None
    return cls(**kwargs)


# kappa name -> the schedule whose alpha(flip_time(s)) it is (the seed's get_scheduler names;
# arc_cosine / arc_sin are its spellings of arccos / arcsin)
KAPPA_SCHEDULES: dict[str, Schedule] = {
    "linear": LinearSchedule(),
    "cosine": CosineSchedule(),
    "cubic": CubicSchedule(),
    "sine": SineSchedule(),
    "arccos": ArccosSchedule(),
    "arcsin": ArcsinSchedule(),
    "root": PolynomialSchedule(0.5),
    "quadratic": PolynomialSchedule(2.0),
}
_KAPPA_ALIASES = {"arc_cosine": "arccos", "arc_sin": "arcsin"}


def kappa_schedule(name: str) -> Schedule:
    """The schedule of the kappa named ``name`` (one of :data:`KAPPA_SCHEDULES`, or the seed's
    ``arc_cosine`` / ``arc_sin``); a ValueError naming the option ``kappa`` otherwise."""
    key = _KAPPA_ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in KAPPA_SCHEDULES:
        raise ValueError(
            f"mdfast: argument 'kappa' must be one of {list(KAPPA_SCHEDULES)}, got {name!r}"
        )
    return KAPPA_SCHEDULES[key]


def kappa(s: torch.Tensor, name: str = "linear") -> torch.Tensor:
    """kappa(s) in interpolant time (s = 0 mask, s = 1 data): ``alpha(flip_time(s))``."""
    return kappa_schedule(name).alpha(flip_time(s))


def dkappa(s: torch.Tensor, name: str = "linear") -> torch.Tensor:
    """d kappa / ds = ``-alpha'(flip_time(s))``."""
    return -kappa_schedule(name).dalpha(flip_time(s))


def kappa_rate(s: torch.Tensor, name: str = "linear") -> torch.Tensor:
    """kappa'(s) / (1 - kappa(s)): the rate at which a masked token is revealed at time s (the
    Euler sampler's step is ``h * kappa_rate``) and the interpolants' ELBO weight; it is the
    masked-CE weight :meth:`Schedule.loss_weight` at ``flip_time(s)`` (``1/(1 - s)`` for linear)."""
    return kappa_schedule(name).loss_weight(flip_time(s))


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
