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


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def masked_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    exclude_index: int = -1,
) -> torch.Tensor:
    """Weighted cross-entropy per row with one class left out of the softmax:

        loss[n] = w[n] * (logsumexp_{j != exclude_index} z[n, j] - z[n, target[n]])

    computed the straightforward way: upcast (float64 stays float64, everything else to
    float32), set the excluded column to -inf, ``log_softmax``, ``gather``, multiply by ``w``.
    ``weight=None`` means 1. Rows with ``w == 0`` are zeroed before the softmax (never read: a
    NaN there does not leak into the loss or the gradient) and get loss 0; their target is not
    used. Returns float64 for float64 logits, float32 otherwise.
    """
    acc = _acc_dtype(logits.dtype)
    z = logits.to(acc)
    owned = z is not logits
    if weight is not None:
        keep = weight != 0
        z = torch.where(keep[:, None], z, 0.0)
        target = torch.where(keep, target, 0)
        owned = True
    if exclude_index >= 0:
        idx = torch.tensor([exclude_index], device=z.device)
        z = z.index_fill_(1, idx, float("-inf")) if owned else z.index_fill(1, idx, float("-inf"))
    nll = -z.log_softmax(-1).gather(1, target[:, None]).squeeze(1)
    if weight is None:
        return nll
    return torch.where(keep, weight.to(acc) * nll, 0.0)


def masked_ce_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    exclude_index: int = -1,
) -> torch.Tensor:
    """:func:`masked_ce` through ``torch.nn.functional.cross_entropy(reduction="none")`` (the
    benchmarks' "PyTorch" baseline): excluded column set to -inf on an upcast copy, then
    ``w * cross_entropy``. Unlike :func:`masked_ce`, zero-weight rows are read."""
    z = logits.to(_acc_dtype(logits.dtype))
    if exclude_index >= 0:
        z = z.index_fill(1, torch.tensor([exclude_index], device=z.device), float("-inf"))
    loss = torch.nn.functional.cross_entropy(z, target, reduction="none")
    return loss if weight is None else weight.to(loss.dtype) * loss


def linear_masked_ce(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    row_weight: torch.Tensor,
    exclude_index: int = -1,
) -> torch.Tensor:
    """Unfused output projection + :func:`masked_ce`: ``logits = hidden @ weight.T + bias`` for
    every row (in the inputs' dtype, N x V), then the masked cross-entropy of each row."""
    logits = torch.nn.functional.linear(hidden, weight, bias)
    return masked_ce(logits, target, row_weight, exclude_index)


MDLM_NEG_INFINITY = -1000000.0


def mdlm_subs_loss(
    logits: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, mask_index: int, t: torch.Tensor
) -> torch.Tensor:
    """MDLM's own per-token SUBS loss for the log-linear schedule, transcribed from
    ``kuleshov-group/mdlm`` ``diffusion.py`` (``_subs_parameterization`` then
    ``_forward_pass_diffusion``): add -1e6 to the mask logit, subtract the logsumexp, overwrite
    unmasked rows with -1e6 except 0 at the observed token (carry-over), gather ``x0`` and weight
    ``-log p`` by ``dsigma / expm1(sigma)`` (``= 1/t``). ``logits [B, L, V]``, ``x0, xt [B, L]``,
    ``t [B]``; returns ``[B, L]`` in the upcast dtype."""
    logits = logits.to(_acc_dtype(logits.dtype)).clone()
    logits[:, :, mask_index] += MDLM_NEG_INFINITY
    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = xt != mask_index
    logits[unmasked] = MDLM_NEG_INFINITY
    logits[unmasked, xt[unmasked]] = 0
    log_p_theta = torch.gather(logits, -1, x0[:, :, None]).squeeze(-1)
    eps = 1e-3
    sigma = -torch.log1p(-(1 - eps) * t)
    dsigma = (1 - eps) / (1 - (1 - eps) * t)
    return -log_p_theta * (dsigma / torch.expm1(sigma))[:, None]


# ---------------------------------------------------------------------------------------------
# sampling (issue 4)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# MDM-Prime sub-tokens (issue 5)
# ---------------------------------------------------------------------------------------------
