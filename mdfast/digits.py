"""MDM-Prime sub-tokens: digit encoding of classes and the RGB super-token packing (the Python
twin of ``csrc/include/mdfast/digits.h``).

A class c ∈ [0, C) is written as ℓ base-b digits, most significant first,

    digit_j(c) = ⌊c / b^(ℓ−1−j)⌋ mod b,    c = Σ_j digit_j(c) · b^(ℓ−1−j),

with b = ⌈C^(1/ℓ)⌉ (:func:`prime_base`). The mask id of a digit is b, so the sub-token vocabulary
has b + 1 entries. The place values b^(ℓ−1−j) come from :func:`powers` only; every digit
computation of the package (the codec, the ops' twins and checks, the Prime module) goes through
:func:`to_digits` and :func:`smallest_class`.

Super-tokens (the seed's ``--super_token``) pack an RGB pixel's 24 bits into two 12-bit tokens,
s0 = 16R + ⌊G/16⌋ and s1 = 256 (G mod 16) + B, so C = 4096 and an image has 2HW tokens.
"""

from __future__ import annotations

import torch

__all__ = [
    "decode",
    "encode",
    "powers",
    "prime_base",
    "smallest_class",
    "super_decode",
    "super_encode",
    "to_digits",
]


def prime_base(num_classes: int, num_digits: int) -> int:
    """Smallest b ≥ 2 with b^ℓ ≥ C, i.e. MDM-Prime's b = ⌈C^(1/ℓ)⌉ computed exactly in integers."""
    if num_classes < 1:
        raise ValueError(f"mdfast: argument 'num_classes' must be >= 1, got {num_classes}")
    if num_digits < 1:
        raise ValueError(f"mdfast: argument 'num_digits' must be >= 1, got {num_digits}")
    b = max(2, round(num_classes ** (1.0 / num_digits)) - 1)
    while b**num_digits < num_classes:
        b += 1
    return b


def powers(base: int, num_digits: int, device=None) -> torch.Tensor:
    """int64[ℓ]: the place values b^(ℓ−1−j) of the digits j = 0 (most significant) .. ℓ−1."""
    return torch.tensor(
        [base ** (num_digits - 1 - j) for j in range(num_digits)], dtype=torch.int64, device=device
    )


def to_digits(x: torch.Tensor, base: int, num_digits: int) -> torch.Tensor:
    """Classes int64[...] -> digits int64[..., ℓ], digit_j(c) = ⌊c / b^(ℓ−1−j)⌋ mod b; unchecked."""
    return (
        torch.div(x.unsqueeze(-1), powers(base, num_digits, x.device), rounding_mode="floor") % base
    )


def smallest_class(digits: torch.Tensor, base: int) -> torch.Tensor:
    """Digits int64[..., ℓ] with mask ids (= b) -> int64[...]: Σ_j d_j b^(ℓ−1−j) with every masked
    digit counted as 0, the smallest class consistent with the visible digits (``decode_digits``
    in digits.h). The visible digits allow some class < C iff this is < C."""
    visible = torch.where(digits == base, 0, digits)
    return (visible * powers(base, digits.shape[-1], digits.device)).sum(-1)


def encode(x: torch.Tensor, num_classes: int, num_digits: int) -> torch.Tensor:
    """Classes int64[...] in [0, C) -> digits int64[..., ℓ] (digit 0 most significant)."""
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise TypeError(f"mdfast: argument 'x' must be an integer tensor, got {x.dtype}")
    x = x.long()
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_classes):
        raise ValueError(f"mdfast: argument 'x' must lie in [0, {num_classes})")
    return to_digits(x, prime_base(num_classes, num_digits), num_digits)


def decode(y: torch.Tensor, num_classes: int, num_digits: int) -> torch.Tensor:
    """Digits int64[..., ℓ] (no mask ids) -> classes int64[...]; the code must be < C."""
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"mdfast: argument 'y' must be an integer tensor, got {y.dtype}")
    base = prime_base(num_classes, num_digits)
    if y.shape[-1:] != (num_digits,):
        raise ValueError(f"mdfast: argument 'y' must end in a dimension of size {num_digits}")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= base):
        raise ValueError(f"mdfast: argument 'y' holds digits outside [0, {base}) (masked digits?)")
    x = smallest_class(y, base)
    if x.numel() and int(x.max()) >= num_classes:
        raise ValueError(f"mdfast: argument 'y' decodes to a class >= {num_classes}")
    return x


def super_encode(pixels: torch.Tensor) -> torch.Tensor:
    """RGB pixels int[..., 3, H, W] in [0, 255] -> super-tokens int64[..., 2, H, W] in [0, 4096):
    s0 = 16 R + ⌊G / 16⌋, s1 = 256 (G mod 16) + B."""
    if pixels.dim() < 3 or pixels.shape[-3] != 3:
        raise ValueError(
            f"mdfast: argument 'pixels' must have shape [..., 3, H, W], got {list(pixels.shape)}"
        )
    p = pixels.long()
    if p.numel() and (int(p.min()) < 0 or int(p.max()) > 255):
        raise ValueError("mdfast: argument 'pixels' must lie in [0, 255]")
    r, g, b = p.unbind(-3)
    return torch.stack([16 * r + g // 16, 256 * (g % 16) + b], dim=-3)


def super_decode(tokens: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`super_encode`: int[..., 2, H, W] in [0, 4096) -> int64[..., 3, H, W]."""
    if tokens.dim() < 3 or tokens.shape[-3] != 2:
        raise ValueError(
            f"mdfast: argument 'tokens' must have shape [..., 2, H, W], got {list(tokens.shape)}"
        )
    t = tokens.long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= 4096):
        raise ValueError("mdfast: argument 'tokens' must lie in [0, 4096)")
    s0, s1 = t.unbind(-3)
    return torch.stack([s0 // 16, 16 * (s0 % 16) + s1 // 256, s1 % 256], dim=-3)
