"""Masked cross-entropy ops (``csrc/cpu/masked_ce.cpp``, ``csrc/cuda/masked_ce.cu``,
``csrc/common/linear_masked_ce.h``): ``masked_ce`` and the output projection fused with it,
``linear_masked_ce``; their contracts, fake impls and autograd formulas."""

from __future__ import annotations

import torch

from mdfast import _extension, reference
from mdfast.ops import _checks as check
from mdfast.ops._validation import checks_values_here

__all__ = ["linear_masked_ce", "masked_ce"]

CE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
WEIGHT_DTYPES = (torch.float32, torch.float64)


# ------------------------------------------------------------------------------------ contract
# (csrc/common/masked_ce_args.h and linear_masked_ce.h)


def check_ce_rows(n, v, ref, ref_name, target, weight, weight_name, exclude_index) -> None:
    """Metadata of the per-row arguments shared by both ops."""
    check.dtype(target, "target", torch.int64)
    if target.dim() != 1 or target.shape[0] != n:
        check.fail(f"argument 'target' must have shape [{n}], got {list(target.shape)}")
    check.same_device(target, "target", ref, ref_name)
    if weight is not None:
        check.dtype_in(weight, weight_name, WEIGHT_DTYPES)
        if weight.dim() != 1 or weight.shape[0] != n:
            check.fail(f"argument '{weight_name}' must have shape [{n}], got {list(weight.shape)}")
        check.same_device(weight, weight_name, ref, ref_name)
    if not -1 <= exclude_index < v:
        check.fail(
            f"argument 'exclude_index' must be -1 or in [0, {v}), got {exclude_index}", ValueError
        )


def check_masked_ce_args(logits, target, weight, exclude_index) -> None:
    check.dim(logits, "logits", 2)
    check.dtype_in(logits, "logits", CE_DTYPES)
    check_ce_rows(*logits.shape, logits, "logits", target, weight, "weight", exclude_index)


def check_linear_masked_ce_args(
    hidden, weight, bias, target, row_weight, exclude_index, chunk_rows, compact_rows=None
) -> None:
    check.dim(hidden, "hidden", 2)
    check.dim(weight, "weight", 2)
    check.dtype_in(hidden, "hidden", CE_DTYPES)
    check.dtype(weight, "weight", hidden.dtype)
    if weight.shape[1] != hidden.shape[1]:
        check.fail(
            f"argument 'weight' must have shape [V, {hidden.shape[1]}], got {list(weight.shape)}"
        )
    check.same_device(weight, "weight", hidden, "hidden")
    if bias is not None:
        check.dtype(bias, "bias", hidden.dtype)
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            check.fail(
                f"argument 'bias' must have shape [{weight.shape[0]}], got {list(bias.shape)}"
            )
        check.same_device(bias, "bias", hidden, "hidden")
    if row_weight is None:
        check.fail("argument 'row_weight' must be a tensor, got None")
    check_ce_rows(
        hidden.shape[0],
        weight.shape[0],
        hidden,
        "hidden",
        target,
        row_weight,
        "row_weight",
        exclude_index,
    )
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or chunk_rows <= 0):
        check.fail(f"argument 'chunk_rows' must be a positive int, got {chunk_rows}", ValueError)
    if compact_rows is not None and not isinstance(compact_rows, bool):
        check.fail(f"argument 'compact_rows' must be True, False or None, got {compact_rows!r}")


def check_ce_values(target, weight, v: int, exclude_index: int, weight_name: str) -> None:
    """The per-row value checks (``check_ce_values``): the first row with a negative weight, or
    with a nonzero weight and a target outside [0, V) or equal to ``exclude_index``, is named.
    Reads the tensors on the host."""
    if target.numel() == 0:
        return
    negative = weight < 0 if weight is not None else torch.zeros_like(target, dtype=torch.bool)
    active = ~negative if weight is None else ~negative & (weight != 0)
    out_of_range = active & ((target < 0) | (target >= v))
    excluded = active & (target == exclude_index)  # exclude_index = -1: already out of range
    row = check.first_true(negative | out_of_range | excluded)
    if row is None:
        return
    if negative[row]:
        check.fail(
            f"argument '{weight_name}' must be non-negative, got {weight[row].item()} at row {row}",
            ValueError,
        )
    if out_of_range[row]:
        check.fail(
            f"argument 'target' must be in [0, {v}) on rows with nonzero weight, got "
            f"{int(target[row])} at row {row}",
            ValueError,
        )
    check.fail(
        f"argument 'target' equals exclude_index={exclude_index} at row {row}, which has nonzero "
        "weight",
        ValueError,
    )


# ------------------------------------------------------------------------------------ wrappers


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
    unaffected). Bad targets / weights raise naming the row (on GPU with
    :func:`mdfast.set_validation` ``("full")``; otherwise such a row's loss is NaN).

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
    check.no_grad(weight, "weight")
    check_masked_ce_args(logits, target, weight, exclude_index)
    kernel = _extension.has_kernel(logits.device)
    if checks_values_here(logits.device, kernel):
        check_ce_values(target, weight, logits.shape[1], exclude_index, "weight")
    if kernel:
        loss, _ = torch.ops.mdfast.masked_ce(
            logits, target, weight, exclude_index, inplace_backward
        )
        return loss
    return reference.masked_ce(logits, target, weight, exclude_index)


def linear_masked_ce(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    row_weight: torch.Tensor,
    exclude_index: int = -1,
    chunk_rows: int | None = None,
    compact_rows: bool | None = None,
) -> torch.Tensor:
    """Output projection fused with :func:`masked_ce`:

        loss[n] = masked_ce(hidden @ weight.T + bias, target, row_weight, exclude_index)[n]

    Rows are projected ``chunk_rows`` at a time, so logits never exist for all rows at once
    (memory O(chunk_rows x V), not O(N x V)). Rows with zero ``row_weight`` contribute nothing
    (their hidden state is not used). Gradients flow to ``hidden``, ``weight`` and ``bias``
    (accumulated in float32 across chunks).

    ``compact_rows`` picks how zero-weight rows are skipped:

    * True (the default for CPU tensors): the rows with nonzero weight are found on the host and
      only they are multiplied. On a GPU this costs host synchronisations (one in the forward,
      one in the backward).
    * False (the default on other devices): every row is multiplied, in fixed chunks, with the
      hidden state of zero-weight rows replaced by 0. No host synchronisation (a loop of calls
      can be captured in a CUDA graph); the GEMMs cost N rows rather than the active ones.

    When gradients are needed, each chunk's gradients (for a unit upstream gradient) are formed
    in the forward while its logits are at hand. The backward scales them when the upstream
    gradient is one broadcast value (``loss.sum()``, scaled afterwards as you like) or, with
    ``compact_rows``, when its values are equal on every row with nonzero weight (``.mean()``
    too); otherwise it recomputes the chunks with the per-row gradient (exact; about a third more
    GEMM work). So on a GPU, reduce with ``.sum()`` (then divide) rather than ``.mean()``.

    Args:
        hidden: [N, D] float32 / bfloat16 / float16 (float64 for gradcheck).
        weight: [V, D], same dtype and device.
        bias: [V] or None.
        target: int64[N]; row_weight: float32[N] non-negative (a constant: no gradient).
        exclude_index: class left out of the softmax, or -1.
        chunk_rows: rows per chunk; None picks about 2^25 / V.
        compact_rows: see above; None picks by device.

    Returns:
        float32[N] (float64 for float64 inputs).
    """
    check.no_grad(row_weight, "row_weight")
    check_linear_masked_ce_args(
        hidden, weight, bias, target, row_weight, exclude_index, chunk_rows, compact_rows
    )
    kernel = _extension.has_kernel(hidden.device)
    if checks_values_here(hidden.device, kernel):
        check_ce_values(target, row_weight, weight.shape[0], exclude_index, "row_weight")
    if kernel:
        compute_grad = torch.is_grad_enabled() and (
            hidden.requires_grad
            or weight.requires_grad
            or (bias is not None and bias.requires_grad)
        )
        return torch.ops.mdfast.linear_masked_ce(
            hidden,
            weight,
            bias,
            target,
            row_weight,
            exclude_index,
            chunk_rows,
            compute_grad,
            compact_rows,
        )[0]
    return reference.linear_masked_ce(hidden, weight, bias, target, row_weight, exclude_index)


# ------------------------------------------------------------------------- fakes, autograd

if _extension.has_ops:

    @torch.library.register_fake("mdfast::masked_ce")
    def _(logits, *_):
        torch._check(logits.dim() == 2, lambda: "logits must be [N, V]")
        n = logits.shape[0]
        acc = reference.acc_dtype(logits.dtype)
        return logits.new_empty((n,), dtype=acc), logits.new_empty((n,), dtype=acc)

    @torch.library.register_fake("mdfast::masked_ce_backward")
    def _(grad_loss, logits, *_):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    @torch.library.register_fake("mdfast::masked_ce_backward_")
    def _(*_):
        return None

    def _masked_ce_setup_context(ctx, inputs, output):
        logits, target, weight, exclude_index, inplace_backward = inputs
        ctx.save_for_backward(logits, target, weight, output[1])
        ctx.exclude_index = exclude_index
        ctx.inplace_backward = inplace_backward
        ctx.mark_non_differentiable(output[1])

    def _masked_ce_backward(ctx, grad_loss, _grad_lse):
        logits, target, weight, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        # In place only in eager mode: under torch.compile functionalisation would turn the
        # mutation into a copy anyway, and mutating a forward input inside the traced backward
        # is not supported.
        if ctx.inplace_backward and logits.is_contiguous() and not torch.compiler.is_compiling():
            torch.ops.mdfast.masked_ce_backward_(
                grad_loss, logits, target, weight, lse, ctx.exclude_index
            )
            # the dispatcher does not bump the version of a custom op's mutated argument under
            # no_grad: do it, so a second backward through these logits raises
            torch.autograd.graph.increment_version(logits)
            grad = logits
        else:
            grad = torch.ops.mdfast.masked_ce_backward(
                grad_loss, logits, target, weight, lse, ctx.exclude_index
            )
        return grad, None, None, None, None

    torch.library.register_autograd(
        "mdfast::masked_ce", _masked_ce_backward, setup_context=_masked_ce_setup_context
    )

    @torch.library.register_fake("mdfast::linear_masked_ce")
    def _(hidden, weight, bias, *args):
        compute_grad = len(args) > 4 and args[4]
        acc = reference.acc_dtype(hidden.dtype)
        (n, d), v = hidden.shape, weight.shape[0]
        loss, lse = hidden.new_empty((n,), dtype=acc), hidden.new_empty((n,), dtype=acc)
        if not compute_grad:
            empty = hidden.new_empty((0,), dtype=acc)
            return loss, lse, empty, empty.clone(), empty.clone()
        gb = hidden.new_empty((v,) if bias is not None else (0,), dtype=acc)
        return (
            loss,
            lse,
            hidden.new_empty((n, d), dtype=acc),
            weight.new_empty((v, d), dtype=acc),
            gb,
        )

    @torch.library.register_fake("mdfast::linear_masked_ce_backward")
    def _(grad_loss, hidden, weight, bias, *_):
        return (
            torch.empty_like(hidden, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            hidden.new_empty((weight.shape[0],) if bias is not None else (0,)),
        )

    def _linear_masked_ce_setup_context(ctx, inputs, output):
        hidden, weight, bias, target, row_weight, exclude_index, chunk_rows, _, compact = inputs
        _, lse, gh, gw, gb = output
        ctx.save_for_backward(hidden, weight, bias, target, row_weight, lse, gh, gw, gb)
        ctx.options = (exclude_index, chunk_rows, compact)
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(lse, gh, gw, gb)

    def _linear_masked_ce_backward(ctx, grad_loss, *_):
        grad_hidden, grad_weight, grad_bias = torch.ops.mdfast.linear_masked_ce_backward(
            grad_loss, *ctx.saved_tensors, *ctx.options
        )
        return grad_hidden, grad_weight, grad_bias if ctx.has_bias else None, *([None] * 6)

    torch.library.register_autograd(
        "mdfast::linear_masked_ce",
        _linear_masked_ce_backward,
        setup_context=_linear_masked_ce_setup_context,
    )
