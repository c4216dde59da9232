"""The sinusoidal time embedding shared by every backbone (DiT, ADM UNet, U-ViT, experiment nets).

For a time (or noise level) t, scale s, max period P and width d with h = ⌊d/2⌋ frequencies

    f_j = P^(−j/h),  j = 0..h−1,
    emb(t) = [cos(s·t·f_0), …, cos(s·t·f_{h−1}), sin(s·t·f_0), …, sin(s·t·f_{h−1})]  (+ one 0 if d
    is odd),

the [cos | sin] order of ADM / DiT (and MDLM's ``TimestepEmbedder``, whose checkpoints load
unchanged). The frequencies are float32; the product is taken in ``promote(t.dtype, float32)``, so
a float64 t keeps its precision. Callers cast the result to their weights' dtype.
"""

from __future__ import annotations

import math

import torch

__all__ = ["sinusoidal_embedding"]


def sinusoidal_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10_000.0, scale: float = 1.0
) -> torch.Tensor:
    """``[len(t), dim]`` sinusoidal features of the 1-d tensor ``t`` (see the module docstring).

    ``scale`` multiplies t before the frequencies (e.g. 1000 for times in [0, 1], as DDPM-style
    nets that expect integer-like timesteps)."""
    if t.dim() != 1:
        raise ValueError(f"mdfast: argument 't' must be 1-d, got shape {list(t.shape)}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    t = t.to(torch.promote_types(t.dtype, torch.float32))
    if scale != 1.0:
        t = scale * t
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
