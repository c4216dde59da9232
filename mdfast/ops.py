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

_CE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _check_masked_ce_args(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    exclude_index: int,
    logits_name: str = "logits",
    weight_name: str = "weight",
) -> None:
    """The checks the kernels make (csrc/common/masked_ce_args.h), for the reference path."""
    if logits.dim() != 2:
        raise RuntimeError(
            f"mdfast: argument '{logits_name}' must be 2-dimensional, got shape "
            f"{list(logits.shape)}"
        )
    if logits.dtype not in _CE_DTYPES:
        raise RuntimeError(
            f"mdfast: argument '{logits_name}' must have dtype float32, bfloat16, float16 or "
            f"float64, got {logits.dtype}"
        )
    n, v = logits.shape
    _check_rows(n, v, logits.device, target, weight, exclude_index, logits_name, weight_name)


def _check_rows(n, v, device, target, weight, exclude_index, ref_name, weight_name) -> None:
    if target.dtype != torch.int64:
        raise RuntimeError(
            f"mdfast: argument 'target' must have dtype torch.int64, got {target.dtype}"
        )
    if target.dim() != 1 or target.shape[0] != n:
        raise RuntimeError(
            f"mdfast: argument 'target' must have shape [{n}], got {list(target.shape)}"
        )
    if target.device != device:
        raise RuntimeError(
            f"mdfast: argument 'target' is on {target.device} but '{ref_name}' is on {device}"
        )
    if weight is not None:
        if weight.dtype not in (torch.float32, torch.float64):
            raise RuntimeError(
                f"mdfast: argument '{weight_name}' must have dtype torch.float32 or "
                f"torch.float64, got {weight.dtype}"
            )
        if weight.dim() != 1 or weight.shape[0] != n:
            raise RuntimeError(
                f"mdfast: argument '{weight_name}' must have shape [{n}], got {list(weight.shape)}"
            )
        if weight.device != device:
            raise RuntimeError(
                f"mdfast: argument '{weight_name}' is on {weight.device} but '{ref_name}' "
                f"is on {device}"
            )
    if not -1 <= exclude_index < max(v, 1) or (v == 0 and exclude_index != -1):
        raise ValueError(
            f"mdfast: argument 'exclude_index' must be -1 or in [0, {v}), got {exclude_index}"
        )
    if n == 0:
        return
    if weight is not None:
        negative = (weight < 0).nonzero()
        if negative.numel():
            row = int(negative[0, 0])
            raise ValueError(
                f"mdfast: argument '{weight_name}' must be non-negative, got "
                f"{weight[row].item()} at row {row}"
            )
        active = weight != 0
    else:
        active = torch.ones_like(target, dtype=torch.bool)
    bad = active & ((target < 0) | (target >= v))
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"mdfast: argument 'target' must be in [0, {v}) on rows with nonzero weight, got "
            f"{int(target[row])} at row {row}"
        )
    if exclude_index >= 0:
        bad = active & (target == exclude_index)
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"mdfast: argument 'target' equals exclude_index={exclude_index} at row {row}, "
                "which has nonzero weight"
            )


def _check_no_grad(t: torch.Tensor | None, name: str) -> None:
    if t is not None and t.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"mdfast: argument '{name}' must not require grad (the loss is not differentiated "
            f"with respect to it); pass {name}.detach()"
        )


def masked_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    exclude_index: int = -1,
    inplace_backward: bool = False,
) -> torch.Tensor:
    """Fused weighted cross-entropy per row, one class left out of the softmax:

        loss[n] = w[n] * (logsumexp_{j != exclude_index} z[n, j] - z[n, target[n]])
        d loss[n] / d z[n, j] = w[n] * (softmax_{j != exclude}(z[n])_j - [j == target[n]]),
                                0 for j = exclude_index

    One pass over each row (online softmax, fp32 accumulation); the forward keeps one logsumexp
    per row for the backward. Rows with ``w == 0`` are never read: loss 0, gradient 0, and their
    target is ignored. A NaN or +inf logit in a row makes that row's loss NaN (other rows are
    unaffected).

    Args:
        logits: [N, V] float32, bfloat16, float16 (or float64, for gradcheck).
        target: int64[N], in [0, V) and != exclude_index on rows with nonzero weight.
        weight: float32[N] (float64 accepted), non-negative, or None for all ones. Treated as a
            constant: it gets no gradient.
        exclude_index: class left out of the softmax (MDLM's mask token), or -1 for none.
        inplace_backward: the backward writes the gradient into ``logits``' own buffer instead
            of a new one (saves one N x V buffer). ``logits`` are consumed: after backward they
            hold the gradient, and any other use of them in the autograd graph raises. Under
            ``torch.compile`` the backward is out of place.

    Returns:
        float32[N] (float64 for float64 logits).
    """
    _check_no_grad(weight, "weight")
    if has_kernel(logits.device) and hasattr(torch.ops.mdfast, "masked_ce"):
        return torch.ops.mdfast.masked_ce(logits, target, weight, exclude_index, inplace_backward)[
            0
        ]
    _check_masked_ce_args(logits, target, weight, exclude_index)
    return reference.masked_ce(logits, target, weight, exclude_index)


def linear_masked_ce(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    row_weight: torch.Tensor,
    exclude_index: int = -1,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Output projection fused with :func:`masked_ce`:

        loss[n] = masked_ce(hidden @ weight.T + bias, target, row_weight, exclude_index)[n]

    Only rows with nonzero ``row_weight`` are multiplied, ``chunk_rows`` of them at a time, so
    logits never exist for all rows at once (memory O(chunk_rows x V), not O(N x V)).
    Gradients flow to ``hidden``, ``weight`` and ``bias`` (accumulated in float32 across chunks).

    Args:
        hidden: [N, D] float32 / bfloat16 / float16 (float64 for gradcheck).
        weight: [V, D], same dtype and device.
        bias: [V] or None.
        target: int64[N]; row_weight: float32[N] non-negative (a constant: no gradient).
        exclude_index: class left out of the softmax, or -1.
        chunk_rows: rows per chunk; None picks about 2^24 / V.

    Returns:
        float32[N] (float64 for float64 inputs).
    """
    _check_no_grad(row_weight, "row_weight")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or chunk_rows <= 0):
        raise ValueError(f"mdfast: argument 'chunk_rows' must be a positive int, got {chunk_rows}")
    if has_kernel(hidden.device) and hasattr(torch.ops.mdfast, "linear_masked_ce"):
        return torch.ops.mdfast.linear_masked_ce(
            hidden, weight, bias, target, row_weight, exclude_index, chunk_rows
        )[0]
    _check_linear_masked_ce_args(hidden, weight, bias, target, row_weight, exclude_index)
    return reference.linear_masked_ce(hidden, weight, bias, target, row_weight, exclude_index)


def _check_linear_masked_ce_args(hidden, weight, bias, target, row_weight, exclude_index):
    for t, name in ((hidden, "hidden"), (weight, "weight")):
        if t.dim() != 2:
            raise RuntimeError(
                f"mdfast: argument '{name}' must be 2-dimensional, got shape {list(t.shape)}"
            )
    if hidden.dtype not in _CE_DTYPES:
        raise RuntimeError(
            "mdfast: argument 'hidden' must have dtype float32, bfloat16, float16 or float64, "
            f"got {hidden.dtype}"
        )
    if weight.dtype != hidden.dtype:
        raise RuntimeError(
            f"mdfast: argument 'weight' must have dtype {hidden.dtype} (that of 'hidden'), got "
            f"{weight.dtype}"
        )
    if weight.shape[1] != hidden.shape[1]:
        raise RuntimeError(
            f"mdfast: argument 'weight' must have shape [V, {hidden.shape[1]}], got "
            f"{list(weight.shape)}"
        )
    if weight.device != hidden.device:
        raise RuntimeError(
            f"mdfast: argument 'weight' is on {weight.device} but 'hidden' is on {hidden.device}"
        )
    if bias is not None:
        if bias.dtype != hidden.dtype:
            raise RuntimeError(
                f"mdfast: argument 'bias' must have dtype {hidden.dtype}, got {bias.dtype}"
            )
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise RuntimeError(
                f"mdfast: argument 'bias' must have shape [{weight.shape[0]}], got "
                f"{list(bias.shape)}"
            )
        if bias.device != hidden.device:
            raise RuntimeError(
                f"mdfast: argument 'bias' is on {bias.device} but 'hidden' is on {hidden.device}"
            )
    if row_weight is None:
        raise RuntimeError("mdfast: argument 'row_weight' must be a tensor, got None")
    _check_rows(
        hidden.shape[0],
        weight.shape[0],
        hidden.device,
        target,
        row_weight,
        exclude_index,
        "hidden",
        "row_weight",
    )


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
