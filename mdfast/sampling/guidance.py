"""Classifier-free guidance: logits z = z_u + s·(z_c − z_u), with z_c the model under the
condition and z_u under the null condition, from ONE batched forward of 2B samples.

A condition is a dict of model keyword arguments whose tensors have the batch as dim 0:
``{"y": labels [B]}`` (class-conditional) or ``{"context": [B, T, C]}`` (text-conditional). The
model gives its null version through ``model.null_condition(cond)`` (the null class, the null
text embedding); a model without one cannot be guided. ``s = 0`` is the unconditional model and
``s = 1`` the conditional one, each from a single B-sample forward. The combination runs in place
on the unconditional half (``torch.lerp``, exact at s = 0 and s = 1), so guidance keeps no B×L×V
buffer besides the 2B logits of the forward itself.
"""

from __future__ import annotations

import math

import torch

__all__ = ["check_guidance", "guided_logits", "null_condition"]


def null_condition(model, cond: dict) -> dict:
    """``model.null_condition(cond)``, or a ValueError naming ``cfg_scale`` when the model has no
    null condition."""
    fn = getattr(model, "null_condition", None)
    if fn is None:
        raise ValueError(
            f"mdfast: 'cfg_scale' != 1 needs a model with a null class or null context "
            f"(model.null_condition); {type(model).__name__} has none"
        )
    return fn(cond)


def check_guidance(model, cond: dict | None, scale: float) -> None:
    """Validate a guidance request before any step: a finite ``scale`` and, unless s = 1, a
    condition and a null version of it."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"mdfast: argument 'cfg_scale' must be a finite number, got {scale!r}")
    if scale == 1.0:
        return
    if not cond:
        raise ValueError(
            f"mdfast: 'cfg_scale' = {scale} guides towards a condition, but none was given "
            "(pass labels / a context, or cfg_scale=1)"
        )
    null_condition(model, cond)


def _cat(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def guided_logits(
    model, x: torch.Tensor, cond: dict | None, scale: float, t: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits of ``model`` at ``x`` [B, ...] guided with scale ``scale`` towards ``cond``
    (module docstring); ``t`` [B] is passed on when given (time-conditioned models)."""
    cond = dict(cond or {})
    extra = {} if t is None else {"t": t}
    if scale == 1.0:
        return model(x, **cond, **extra)
    null = null_condition(model, cond)
    if scale == 0.0:
        return model(x, **null, **extra)
    if t is not None:
        extra = {"t": torch.cat([t, t])}
    z = model(torch.cat([x, x]), **_cat(cond, null), **extra)
    zc, zu = z.chunk(2)
    if torch.is_grad_enabled() and z.requires_grad:
        return torch.lerp(zu, zc, scale)
    return zu.lerp_(zc, scale)
