"""Pure-PyTorch twin of every mdfast op.

These functions are the single source of truth for the math: tests compare the kernels against
them (in float64 where it matters), benchmarks import them as the baseline, and :mod:`mdfast.ops`
falls back to them when the compiled extension is missing. They favour clarity over speed but stay
vectorised, so the fallback path is usable. They do no argument checking; :mod:`mdfast.ops` does.
"""

from __future__ import annotations

import torch

# ---------------------------------------------------------------------------------------------
# RNG: Philox4x32-10 and uniforms (csrc/include/mdfast/philox.h documents the stream layout)
# ---------------------------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85


def _mulhilo32(a: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product a·x, for a uint32 constant and uint32 words
    held in int64. Split into 16-bit limbs so no intermediate overflows int64."""
    t = a * (x & 0xFFFF)  # < 2^48
    u = a * (x >> 16)  # < 2^48
    lo = (t + ((u & 0xFFFF) << 16)) & _MASK32
    hi = ((t >> 16) + u) >> 16
    return hi, lo


def philox4x32(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 block function: counter int64[N, 4], key int64[2] (uint32 words held in
    int64) -> int64[N, 4]. Ten rounds of

        (hi0, lo0) = mulhilo(M0, c0); (hi1, lo1) = mulhilo(M1, c2)
        c <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0),  k <- k + (W0, W1)
    """
    c = [(counter[:, j] & _MASK32) for j in range(4)]
    k0 = int(key[0]) & _MASK32
    k1 = int(key[1]) & _MASK32
    for _ in range(10):
        hi0, lo0 = _mulhilo32(_PHILOX_M0, c[0])
        hi1, lo1 = _mulhilo32(_PHILOX_M1, c[2])
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0 = (k0 + _PHILOX_W0) & _MASK32
        k1 = (k1 + _PHILOX_W1) & _MASK32
    return torch.stack(c, dim=1)


def philox_blocks(seed: int, offset: int, blocks: torch.Tensor) -> torch.Tensor:
    """Words int64[B, 4] of blocks ``blocks`` of the stream (seed, offset):
    counter = (block lo, block hi, offset lo, offset hi), key = (seed lo, seed hi)."""
    counter = torch.stack(
        [
            blocks & _MASK32,
            blocks >> 32,
            torch.full_like(blocks, offset & _MASK32),
            torch.full_like(blocks, offset >> 32),
        ],
        dim=1,
    )
    key = torch.tensor([seed & _MASK32, seed >> 32], dtype=torch.int64)
    return philox4x32(counter, key)


def uniform(
    shape: tuple[int, ...] | torch.Size,
    seed: int,
    offset: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniforms strictly inside (0, 1) from the stream (seed, offset).

    float64: element i takes block i//2, words (w[2j], w[2j+1]) with j = i%2,
    k = (w[2j] << 21) | (w[2j+1] >> 11) (53 bits), u = k·2^-53, and u = 2^-54 when k = 0.
    float32: element i takes block i//4, word w[i%4], k = w >> 8 (24 bits), u = k·2^-24, and
    u = 2^-25 when k = 0.
    """
    numel = 1
    for s in shape:
        numel *= int(s)
    per_block = 2 if dtype == torch.float64 else 4
    blocks = torch.arange((numel + per_block - 1) // per_block, dtype=torch.int64, device=device)
    words = philox_blocks(seed, offset, blocks)
    if dtype == torch.float64:
        k = (words[:, 0::2] << 21) | (words[:, 1::2] >> 11)
        u = k.to(torch.float64) * 2.0**-53
        u = torch.where(k == 0, torch.full_like(u, 2.0**-54), u)
    else:
        k = words >> 8
        u = k.to(torch.float32) * 2.0**-24
        u = torch.where(k == 0, torch.full_like(u, 2.0**-25), u)
    return u.reshape(-1)[:numel].reshape(tuple(shape)).to(dtype)


# ---------------------------------------------------------------------------------------------
# masked cross-entropy (issue 3)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# sampling (issue 4)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# MDM-Prime sub-tokens (issue 5)
# ---------------------------------------------------------------------------------------------
