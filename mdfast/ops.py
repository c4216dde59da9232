"""The op surface of mdfast: thin wrappers over ``torch.ops.mdfast.*``.

Each wrapper runs the compiled kernel when one exists for the tensors' device and otherwise the
pure-PyTorch twin in :mod:`mdfast.reference` (after the same argument checks the kernels make).
Fake (meta) implementations and autograd formulas of the compiled ops are registered here, so
``torch.compile(fullgraph=True)`` traces through every op.
"""

from __future__ import annotations

import torch

from mdfast import reference
from mdfast._extension import _C, has_kernel

__all__ = ["philox4x32", "uniform"]

_INT64_MAX = 2**63 - 1


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"mdfast: argument '{name}' must be an int, got {type(value).__name__}")
    if not 0 <= value <= _INT64_MAX:
        raise ValueError(f"mdfast: argument '{name}' must be in [0, 2**63), got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# RNG
# ---------------------------------------------------------------------------------------------


def _check_philox4x32_args(counter: torch.Tensor, key: torch.Tensor) -> None:
    if counter.dtype != torch.int64:
        raise RuntimeError(
            f"mdfast: argument 'counter' must have dtype torch.int64, got {counter.dtype}"
        )
    if counter.dim() != 2 or counter.shape[1] != 4:
        raise RuntimeError(
            f"mdfast: argument 'counter' must have shape [N, 4], got {list(counter.shape)}"
        )
    if key.dtype != torch.int64:
        raise RuntimeError(f"mdfast: argument 'key' must have dtype torch.int64, got {key.dtype}")
    if key.dim() != 1 or key.shape[0] != 2:
        raise RuntimeError(f"mdfast: argument 'key' must have shape [2], got {list(key.shape)}")
    if key.device != counter.device:
        raise RuntimeError(
            f"mdfast: argument 'key' is on {key.device} but 'counter' is on {counter.device}"
        )


def philox4x32(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 block function, the raw generator under every mdfast random draw.

    Args:
        counter: int64[N, 4], each entry a uint32 word (only the low 32 bits are used).
        key: int64[2], uint32 words, on the same device as ``counter``.

    Returns:
        int64[N, 4]: the four output words of each counter, each in [0, 2^32).
    """
    if has_kernel(counter.device):
        return torch.ops.mdfast.philox4x32(counter, key)
    _check_philox4x32_args(counter, key)
    return reference.philox4x32(counter, key)


def uniform(
    shape,
    seed: int,
    offset: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Counter-based uniforms strictly inside (0, 1): the same (seed, offset) gives the same bits
    on CPU and CUDA.

    Element i of a float64 draw carries 53 random bits from Philox block i//2; float32 carries 24
    bits from block i//4 (exact layout in ``csrc/include/mdfast/philox.h``). Different offsets
    never share a Philox counter, so a caller that advances ``offset`` by one per call never
    reuses randomness.

    Args:
        shape: output shape.
        seed: key of the stream, in [0, 2^63).
        offset: stream index, in [0, 2^63).
        dtype: torch.float64 (default) or torch.float32.
        device: where the draw happens and the result lives.
    """
    seed = _check_int(seed, "seed")
    offset = _check_int(offset, "offset")
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(
            f"mdfast: argument 'dtype' must be torch.float64 or torch.float32, got {dtype}"
        )
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"mdfast: argument 'shape' must be non-negative ints, got {shape}")
    device = torch.device("cpu") if device is None else torch.device(device)
    if has_kernel(device):
        out = torch.empty(shape, dtype=dtype, device=device)
        torch.ops.mdfast.uniform_out(out, seed, offset)
        return out
    return reference.uniform(shape, seed, offset, dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------
# masked cross-entropy (issue 3)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# sampling (issue 4)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# MDM-Prime sub-tokens (issue 5)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Fake (meta) implementations of the compiled ops
# ---------------------------------------------------------------------------------------------

if _C is not None:

    @torch.library.register_fake("mdfast::philox4x32")
    def _philox4x32_fake(counter, key):
        torch._check(counter.dim() == 2 and counter.shape[1] == 4, lambda: "counter must be [N, 4]")
        return torch.empty_like(counter)

    @torch.library.register_fake("mdfast::uniform_out")
    def _uniform_out_fake(out, seed, offset):
        return None
