"""RNG ops (``csrc/cpu/philox.cpp``, ``csrc/cuda/philox.cu``): the Philox4x32-10 block function and
counter-based uniforms, the generator under every mdfast random draw."""

from __future__ import annotations

import torch

from mdfast import _extension, reference
from mdfast.ops import _checks as check

__all__ = ["philox4x32", "uniform", "uniform_rows"]


def check_philox4x32_args(counter: torch.Tensor, key: torch.Tensor) -> None:
    """The contract of :func:`philox4x32` (``check_philox4x32_args`` in philox_args.h)."""
    check.dtype(counter, "counter", torch.int64)
    check.dim(counter, "counter", 2)
    if counter.shape[1] != 4:
        check.fail(f"argument 'counter' must have shape [N, 4], got {list(counter.shape)}")
    check.dtype(key, "key", torch.int64)
    if key.dim() != 1 or key.shape[0] != 2:
        check.fail(f"argument 'key' must have shape [2], got {list(key.shape)}")
    check.same_device(key, "key", counter, "counter")


def check_uniform_args(shape, seed, offset, dtype) -> tuple[tuple[int, ...], int, int]:
    """The contract of :func:`uniform`; returns (shape, seed, offset) as Python ints."""
    seed = check.arg_int(seed, "seed")
    offset = check.arg_int(offset, "offset")
    if dtype not in (torch.float64, torch.float32):
        check.fail(
            f"argument 'dtype' must be torch.float64 or torch.float32, got {dtype}", ValueError
        )
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        check.fail(f"argument 'shape' must be non-negative ints, got {shape}", ValueError)
    return shape, seed, offset


def check_uniform_rows_args(offsets, n, seed, dtype) -> tuple[int, int]:
    """The contract of :func:`uniform_rows` (``check_uniform_rows_args`` in philox_args.h);
    returns (n, seed) as Python ints."""
    seed = check.arg_int(seed, "seed")
    if not check.is_int(n):
        check.fail(f"argument 'n' must be an int, got {type(n).__name__}", TypeError)
    check.non_negative(n, "n")
    if dtype not in (torch.float64, torch.float32):
        check.fail(
            f"argument 'dtype' must be torch.float64 or torch.float32, got {dtype}", ValueError
        )
    if not isinstance(offsets, torch.Tensor):
        check.fail(f"argument 'offsets' must be a tensor, got {type(offsets).__name__}")
    check.dtype(offsets, "offsets", torch.int64)
    check.dim(offsets, "offsets", 1)
    return int(n), seed


def philox4x32(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 block function, the raw generator under every mdfast random draw.

    Args:
        counter: int64[N, 4], each entry a uint32 word (only the low 32 bits are used).
        key: int64[2], uint32 words, on the same device as ``counter``.

    Returns:
        int64[N, 4]: the four output words of each counter, each in [0, 2^32).
    """
    check_philox4x32_args(counter, key)
    if _extension.has_kernel(counter.device):
        return torch.ops.mdfast.philox4x32(counter, key)
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
    shape, seed, offset = check_uniform_args(shape, seed, offset, dtype)
    device = torch.device("cpu") if device is None else torch.device(device)
    if _extension.has_kernel(device):
        out = torch.empty(shape, dtype=dtype, device=device)
        torch.ops.mdfast.uniform_out(out, seed, offset)
        return out
    return reference.uniform(shape, seed, offset, dtype=dtype, device=device)


def uniform_rows(
    offsets: torch.Tensor, n: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Uniforms [R, n], row r from its own stream: row r equals
    ``uniform((n,), seed, offsets[r])`` bit for bit (on ``offsets``' device).

    One launch draws noise for a set of rows keyed independently (the samples of a batch by
    their global index: :class:`mdfast.rng.NoiseKey`), so a row's numbers do not depend on which
    other rows are drawn with it.

    Args:
        offsets: int64[R], each row's stream offset (read as uint64 bits; not checked on the host).
        n: numbers per row, >= 0.
        seed: key of the streams, in [0, 2^63).
        dtype: torch.float64 (53 bits, default) or torch.float32 (24 bits).
    """
    n, seed = check_uniform_rows_args(offsets, n, seed, dtype)
    if _extension.has_kernel(offsets.device):
        out = torch.empty((offsets.shape[0], n), dtype=dtype, device=offsets.device)
        torch.ops.mdfast.uniform_rows_out(out, seed, offsets)
        return out
    return reference.uniform_rows(offsets, n, seed, dtype)


if _extension.has_ops:

    @torch.library.register_fake("mdfast::philox4x32")
    def _(counter, key):
        torch._check(counter.dim() == 2 and counter.shape[1] == 4, lambda: "counter must be [N, 4]")
        return torch.empty_like(counter)

    @torch.library.register_fake("mdfast::uniform_out")
    def _(out, *_):
        return None

    @torch.library.register_fake("mdfast::uniform_rows_out")
    def _(out, *_):
        return None
