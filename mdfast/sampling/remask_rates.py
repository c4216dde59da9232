"""Noise schedules of the samplers, as alpha(t) = P(a token is still clean at time t), t in [0, 1]
(t = 1 all masked, t = 0 data), and the ReMDM remasking rates sigma_t.

* ``"loglinear"``: MDLM's log-linear schedule, alpha_t = 1 - (1 - 1e-3) t (``ddpm``).
* ``"linear"``: alpha_t = 1 - t, the form MDLM's ``ddpm_cache`` path and every ReMDM sampler use
  (move chance t directly, without the (1 - eps) factor).
* any other :mod:`mdfast.schedules` schedule, by name or instance.
"""

from __future__ import annotations

import math

import torch

from mdfast import schedules as _schedules


def alpha(t: float, schedule) -> float:
    """alpha_t of ``schedule``: a name of :func:`mdfast.schedules.get_schedule` ("loglinear",
    "linear", "cosine", "polynomial") or a :class:`mdfast.schedules.Schedule`."""
    sched = _schedules.get_schedule(schedule) if isinstance(schedule, str) else schedule
    if not isinstance(sched, _schedules.Schedule):
        raise ValueError(
            f"mdfast: argument 'schedule' must be a schedule name or Schedule, got {schedule!r}"
        )
    if isinstance(sched, _schedules.LogLinearSchedule):  # affine in t: no tensor round trip
        return float(sched.alpha(t))
    return float(sched.alpha(torch.tensor(t, dtype=torch.float64)))


def sigma_cap(alpha_t: float, alpha_s: float, eta: float) -> float:
    """ReMDM-cap: sigma = min(eta, (1 - alpha_s) / alpha_t)."""
    return min(eta, sigma_max(alpha_t, alpha_s))


def sigma_max(alpha_t: float, alpha_s: float) -> float:
    """Largest remasking rate keeping the ReMDM posterior valid: min(1, (1 - alpha_s)/alpha_t)."""
    if alpha_t <= 0.0:
        return 1.0
    return min(1.0, (1.0 - alpha_s) / alpha_t)


def sigma_rescale(alpha_t: float, alpha_s: float, eta: float) -> float:
    """ReMDM-rescale: sigma = eta * sigma_max."""
    return eta * sigma_max(alpha_t, alpha_s)


def sigma_forward_backward(alpha_t: float, alpha_s: float) -> float:
    """Forward-backward corrector: sigma = (alpha_s - alpha_t) / alpha_t (1 when alpha_t = 0),
    clamped to [0, 1]."""
    if alpha_t <= 0.0:
        return 1.0
    return min(1.0, max(0.0, (alpha_s - alpha_t) / alpha_t))


def loop_alpha(t: float, t_on: float, t_off: float, alpha_on: float) -> float:
    """ReMDM-loop schedule: MDLM from alpha = 0 (t = 1) to alpha_on (t = t_on), constant alpha_on
    on [t_off, t_on], then MDLM from alpha_on to 1 (t = 0)."""
    if t > t_on:
        return (1.0 - t) * alpha_on / (1.0 - t_on)
    if t > t_off:
        return alpha_on
    return 1.0 - t * (1.0 - alpha_on) / t_off


def dfm_step(t: float, steps: int) -> tuple[float, float]:
    """DFM corrector's adaptive step at time t: a_t = 10 t^(1/4) (1 - t)^(1/4) + 1,
    b_t = a_t - 1, dt = min(1/T, 1 / (a_t / t + b_t / (1 - t))). Returns (dt, b_t)."""
    a = 10.0 * t**0.25 * (1.0 - t) ** 0.25 + 1.0
    b = a - 1.0
    rate = a / t + (b / (1.0 - t) if t < 1.0 else math.inf)
    return min(1.0 / steps, 1.0 / rate), b
