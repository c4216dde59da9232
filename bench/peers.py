"""Optional third-party peers of the benchmarks (the PyTorch and seed-code baselines live in
:mod:`mdfast.baselines`): Liger-Kernel's losses when it imports, and torch's chunked
``F.linear_cross_entropy`` where this torch has it.

Each comes as ``(callable, "")`` or ``(None, why)`` so that a benchmark records why a provider is
missing instead of failing. Loss providers share mdfast's signatures and return something whose
``.sum()`` is the summed loss:

* cross-entropy: ``fn(logits [N, V], target [N], weight [N], exclude_index)``;
* linear cross-entropy: ``fn(hidden [N, D], weight [V, D], bias [V], target, row_weight,
  exclude_index)``.

Liger and torch have no per-row weight and no excluded class: rows with zero weight become their
ignored rows (``ignore_index=-100``) and the loss is summed unweighted, which is the same work.
Liger's cross-entropy writes the gradient into the logits buffer during the forward (like
mdfast's ``inplace_backward``), so repeated calls read the previous call's gradient as logits.
"""

from __future__ import annotations

import torch

IGNORE = -100


def _ignored(target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.where(weight != 0, target, IGNORE)


def liger_cross_entropy():
    """Liger-Kernel's ``LigerCrossEntropyLoss`` (reduction ``sum``), or why it cannot run."""
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss

        loss = LigerCrossEntropyLoss(ignore_index=IGNORE, reduction="sum")
    except Exception as exc:  # ImportError, or triton failing to initialise without a GPU
        return None, f"liger-kernel not importable: {type(exc).__name__}: {exc}"

    def liger_ce(logits, target, weight, exclude_index):
        return loss(logits, _ignored(target, weight))

    return liger_ce, ""


def liger_fused_linear_cross_entropy(accum_dtype: torch.dtype | None = None):
    """Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss`` (reduction ``sum``; its default
    accumulates the weight gradient in the weights' dtype, ``accum_dtype=torch.float32`` in
    fp32), or why it cannot run."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        kw = {} if accum_dtype is None else {"accum_dtype": accum_dtype}
        loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum", **kw)
    except Exception as exc:
        return None, f"liger-kernel not importable: {type(exc).__name__}: {exc}"

    def liger_flce(hidden, weight, bias, target, row_weight, exclude_index):
        return loss(weight, hidden, _ignored(target, row_weight), bias)

    return liger_flce, ""


def torch_linear_cross_entropy():
    """torch's own chunked ``F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())``
    (torch >= 2.13), or why it is missing."""
    fn = getattr(torch.nn.functional, "linear_cross_entropy", None)
    options = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if fn is None or options is None:
        return None, f"torch {torch.__version__} has no chunked F.linear_cross_entropy"

    def torch_linear_ce(hidden, weight, bias, target, row_weight, exclude_index):
        return fn(
            hidden,
            weight,
            _ignored(target, row_weight),
            linear_bias=bias,
            reduction="sum",
            ignore_index=IGNORE,
            options=options(),
        )

    return torch_linear_ce, ""
