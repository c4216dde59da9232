"""ReMDM's remasking rates sigma_t and the schedules of its loop and DFM samplers.

A decoded position remasks with probability sigma_t on a step t -> s (alpha_t <= alpha_s); the
rates below are the ReMDM strategies (``cap``, ``rescale``, forward-backward), the loop's
piecewise alpha and the DFM corrector's adaptive step. alpha(t) of a noise schedule is
:func:`mdfast.schedules.alpha_at`.
"""

from __future__ import annotations

import math

__all__ = [
    "dfm_step",
    "loop_alpha",
    "sigma_cap",
    "sigma_forward_backward",
    "sigma_max",
    "sigma_rescale",
]


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
