"""MDM-Prime sub-token ops (``csrc/cpu/prime.cpp``, ``csrc/cuda/prime.cu``): the consistent-set
cross-entropy ``prime_ce`` and the partial-unmasking step ``prime_sample_step``; their contracts,
fake impls and the autograd formula of ``prime_ce``. Digits follow :mod:`mdfast.digits`."""

from __future__ import annotations

import torch

from mdfast import _extension, reference
from mdfast.digits import prime_base, smallest_class, to_digits
from mdfast.ops import _checks as check
from mdfast.ops._validation import checks_values_here

__all__ = ["prime_ce", "prime_sample_step"]

MAX_DIGITS = 16  # kMaxDigits in digits.h


# ------------------------------------------------------------------------------------ contract
# (csrc/common/prime_args.h)


def check_prime_common(logits: torch.Tensor, digits: torch.Tensor, base) -> int:
    """The checks both ops share; returns the resolved base."""
    if not logits.dtype.is_floating_point:
        check.fail(f"argument 'logits' must be a floating tensor, got {logits.dtype}")
    check.dim(logits, "logits", 2)
    check.dtype(digits, "digits", torch.int64)
    check.dim(digits, "digits", 2)
    check.same_device(digits, "digits", logits, "logits")
    if digits.shape[0] != logits.shape[0]:
        check.fail(
            f"argument 'digits' must have {logits.shape[0]} rows (one per logits row), got "
            f"{digits.shape[0]}"
        )
    ell, num_classes = digits.shape[1], logits.shape[1]
    if not 1 <= ell <= MAX_DIGITS:
        check.fail(
            f"argument 'digits' must have between 1 and {MAX_DIGITS} columns (the number of "
            f"digits per token), got {ell}"
        )
    if num_classes < 1:
        check.fail("argument 'logits' must have at least one class")
    if base is None:
        base = prime_base(num_classes, ell)
    if isinstance(base, bool) or not isinstance(base, int):
        check.fail(f"argument 'base' must be an int, got {type(base).__name__}", TypeError)
    if base < 2:
        check.fail(f"argument 'base' must be >= 2, got {base}", ValueError)
    if base**ell < num_classes:
        check.fail(
            f"argument 'base' is too small: base^ell = {base}^{ell} < C = {num_classes} "
            f"(MDM-Prime uses base = ceil(C^(1/ell)) = {prime_base(num_classes, ell)})",
            ValueError,
        )
    return base


def check_prime_ce_args(logits, target, digits, base, mode, weight) -> int:
    base = check_prime_common(logits, digits, base)
    n = logits.shape[0]
    check.dtype(target, "target", torch.int64)
    check.shape(target, "target", (n,))
    check.same_device(target, "target", logits, "logits")
    if weight is not None:
        check.dtype_in(weight, "weight", (torch.float32, torch.float64))
        check.shape(weight, "weight", (n,))
        check.same_device(weight, "weight", logits, "logits")
    if mode not in ("joint", "elbo"):
        check.fail(f"argument 'mode' must be 'joint' or 'elbo', got '{mode}'", ValueError)
    return base


def check_prime_sample_step_args(
    logits, digits, base, alpha_t, alpha_s, temperature, mode, fixed_digits, seed, offset
):
    """Returns (base, seed, offset) resolved."""
    base = check_prime_common(logits, digits, base)
    if not 0.0 <= alpha_t <= 1.0:
        check.fail(f"argument 'alpha_t' must lie in [0, 1], got {alpha_t}", ValueError)
    if not alpha_t <= alpha_s <= 1.0:
        check.fail(f"argument 'alpha_s' must lie in [alpha_t, 1], got {alpha_s}", ValueError)
    if not 0.0 < temperature < 1e300:
        check.fail(
            f"argument 'temperature' must be a positive finite number, got {temperature}",
            ValueError,
        )
    seed = check.arg_int(seed, "seed")
    offset = check.arg_int(offset, "offset")
    if mode not in ("exact", "marginal"):
        check.fail(f"argument 'mode' must be 'exact' or 'marginal', got '{mode}'", ValueError)
    if fixed_digits is not None:
        check.dtype(fixed_digits, "fixed_digits", torch.int64)
        check.dim(fixed_digits, "fixed_digits", 1)
    return base, seed, offset


# ---------------------------------------------------------------------------- value checks

_DIGIT_OUT_OF_RANGE, _EMPTY_SET, _TARGET_OUT_OF_RANGE, _TARGET_INCONSISTENT = 1, 2, 3, 4


def check_prime_rows(digits, base: int, num_classes: int, target=None) -> None:
    """Per-row checks of digits.h ``validate_token`` (digits in [0, base]; a non-empty consistent
    set; target in [0, C) and consistent with the visible digits), naming the first bad row and
    its first problem. Reads the tensors on the host."""
    if digits.numel() == 0:
        return
    code = torch.zeros(digits.shape[0], dtype=torch.int64, device=digits.device)
    bad_digit = ((digits < 0) | (digits > base)).any(1)
    code = code.masked_fill(bad_digit, _DIGIT_OUT_OF_RANGE)
    empty = smallest_class(digits.clamp(0, base), base) >= num_classes
    code = torch.where((code == 0) & empty, _EMPTY_SET, code)
    if target is not None:
        out = (target < 0) | (target >= num_classes)
        code = torch.where((code == 0) & out, _TARGET_OUT_OF_RANGE, code)
        target_digits = to_digits(target.clamp(0, num_classes - 1), base, digits.shape[1])
        inconsistent = ((digits != base) & (digits != target_digits)).any(1)
        code = torch.where((code == 0) & inconsistent, _TARGET_INCONSISTENT, code)
    row = check.first_true(code != 0)
    if row is None:
        return
    kind, d = int(code[row]), digits[row].tolist()
    if kind == _DIGIT_OUT_OF_RANGE:
        check.fail(
            f"argument 'digits' row {row} = {d} holds a digit outside [0, base] = [0, {base}] "
            f"({base} is the mask id)",
            ValueError,
        )
    if kind == _EMPTY_SET:
        check.fail(
            f"argument 'digits' row {row} = {d} allows no class < C = {num_classes} (its visible "
            "digits form an invalid code)",
            ValueError,
        )
    t = int(target[row])
    if kind == _TARGET_OUT_OF_RANGE:
        check.fail(
            f"argument 'target' row {row} = {t} is outside [0, C) = [0, {num_classes})", ValueError
        )
    check.fail(
        f"argument 'target' row {row} = {t} is inconsistent with the visible digits {d} of that "
        "row",
        ValueError,
    )


def check_fixed_digits_values(fixed_digits: torch.Tensor, num_digits: int) -> None:
    i = check.first_true((fixed_digits < 0) | (fixed_digits >= num_digits))
    if i is not None:
        check.fail(
            f"argument 'fixed_digits' holds {int(fixed_digits[i])}, outside the digit positions "
            f"[0, {num_digits})",
            ValueError,
        )


# ------------------------------------------------------------------------------------ wrappers


def prime_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    digits: torch.Tensor,
    *,
    base: int | None = None,
    mode: str = "joint",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Consistent-set cross-entropy of MDM-Prime sub-tokens, one pass over each consistent set.

    Row i has target class x_i ∈ [0, C) and digits d_i ∈ [0, b]^ℓ (b = ``base`` is the mask id;
    digit j of a class is ⌊c / b^(ℓ−1−j)⌋ mod b). The consistent set is
    V_i = {c < C : digit_j(c) = d_ij for every visible j}, and p_V = softmax(z_i) restricted to V_i.

    * ``mode="joint"``: ℓ_i = −log p_V(x_i) (the MDM-Prime text loss with carry-over). Multiplied
      by α'/(1−α) this is *not* a bound on the NLL for ℓ > 1 (a perfect model can score below the
      data entropy).
    * ``mode="elbo"``: ℓ_i = Σ_{j masked} −log Σ_{c ∈ V_i, digit_j(c) = digit_j(x_i)} p_V(c), the
      continuous-time bound for independent digit masking: use it for NLL / BPD / PPL.

    Returns w_i · ℓ_i, float32[N] (float64[N] for float64 logits). Rows with no masked digit or
    w_i = 0 are exactly 0 and their logits are never read; classes ≥ C never count. The kernel
    keeps ℓ+1 online log-sum-exps per row and walks only V_i (|V_i| ≤ b^#masked). A row with
    invalid digits or a target outside V_i raises naming it (on GPU with
    :func:`mdfast.set_validation` ``("full")``; otherwise its loss is NaN).

    Backward (logits only; ``weight`` is a constant): for c ∈ V_i, joint
    g·w·(p_V(c) − 1[c = x_i]); elbo g·w·(m_i p_V(c) − Σ_{j masked, digit_j(c) = digit_j(x_i)}
    p_{V_ij}(c)) with m_i the number of masked digits; 0 outside V_i.

    Args:
        logits: [N, C] float32 / float64 / bfloat16 / float16.
        target: int64[N], each consistent with its row's visible digits.
        digits: int64[N, ℓ], 1 ≤ ℓ ≤ 16, values in [0, base] (base = masked).
        base: b ≥ 2 with b^ℓ ≥ C; default ⌈C^(1/ℓ)⌉.
        mode: ``"joint"`` or ``"elbo"``.
        weight: float32 / float64 [N] or None (all ones).
    """
    base = check_prime_ce_args(logits, target, digits, base, mode, weight)
    kernel = _extension.has_kernel(logits.device)
    if checks_values_here(logits.device, kernel):
        check_prime_rows(digits, base, logits.shape[1], target)
    if kernel:
        return torch.ops.mdfast.prime_ce(logits, target, digits, base, mode, weight)[0]
    return reference.prime_ce(logits, target, digits, base, mode, weight)


def prime_sample_step(
    logits: torch.Tensor,
    digits: torch.Tensor,
    *,
    base: int | None = None,
    alpha_t: float,
    alpha_s: float,
    temperature: float = 1.0,
    mode: str = "exact",
    fixed_digits: torch.Tensor | None = None,
    seed: int,
    offset: int,
) -> torch.Tensor:
    """One reverse step of MDM-Prime's independent digit masking (predictor only).

    Each masked digit of each row is revealed independently with probability
    (α_s − α_t)/(1 − α_t) (α = probability of a digit being visible; 1 when α_t = 1), from one
    float64 uniform per digit. Revealed values:

    * ``mode="exact"`` (default): one class ĉ ~ softmax(z/τ) restricted to the consistent set V
      (Gumbel-max in float64 over V); every revealed digit takes digit_j(ĉ). This is the exact
      ancestral step of independent digit masking.
    * ``mode="marginal"`` (the seed's ``--carry_over``): each revealed digit draws independently
      from its own marginal q_j(k) = Σ_{c ∈ V, digit_j(c) = k} softmax_V(z/τ)(c). When b^ℓ > C the
      assembled digits can allow no class < C; such a row's revealed digits are redrawn jointly as
      in ``exact``. It coincides with ``exact`` in law when at most one digit of a row reveals,
      and such rows take the joint draw (same bits as ``exact``), which also makes ℓ = 1 work.

    The output is always consistent with the old visible digits, allows a class < C, and never
    changes the digit positions listed in ``fixed_digits`` (imputation), masked or not. Rows
    revealing nothing never read their logits. The seed's corrector (re-masking / switching
    visible digits at rate β(t)) is not part of this op (see ``mdfast.diffusion.Prime``). Invalid
    digit rows raise naming the row (on GPU with :func:`mdfast.set_validation` ``("full")``;
    otherwise such a row comes back as -1 digits).

    Randomness: Philox sub-streams of (seed, offset) — stream 0 element n·ℓ+j for the reveal
    decision, stream 1 element n·C+c for the class Gumbel, stream 2 element (n·ℓ+j)·b+k for the
    marginal digit Gumbel — identical on CPU and CUDA and in
    :func:`mdfast.reference.prime_sample_step`.
    Advance ``offset`` by one per call.

    Args:
        logits: [N, C] floating. digits: int64[N, ℓ] in [0, base]. base: default ⌈C^(1/ℓ)⌉.
        alpha_t, alpha_s: 0 ≤ α_t ≤ α_s ≤ 1. temperature: τ > 0.
        fixed_digits: int64[k] digit positions in [0, ℓ) never changed, or None.
        seed, offset: Philox stream, in [0, 2^63).

    Returns:
        int64[N, ℓ]: the next digits.
    """
    base, seed, offset = check_prime_sample_step_args(
        logits, digits, base, alpha_t, alpha_s, temperature, mode, fixed_digits, seed, offset
    )
    kernel = _extension.has_kernel(logits.device)
    if checks_values_here(logits.device, kernel):
        if fixed_digits is not None:
            check_fixed_digits_values(fixed_digits, digits.shape[1])
        check_prime_rows(digits, base, logits.shape[1])
    op = torch.ops.mdfast.prime_sample_step if kernel else reference.prime_sample_step
    return op(
        logits, digits, base, float(alpha_t), float(alpha_s), float(temperature), mode,
        fixed_digits, seed, offset,
    )  # fmt: skip


# ------------------------------------------------------------------------- fakes, autograd

if _extension.has_ops:

    @torch.library.register_fake("mdfast::prime_ce")
    def _(logits, target, digits, *_):
        torch._check(logits.dim() == 2 and digits.dim() == 2, lambda: "prime_ce: bad ranks")
        dtype = reference.acc_dtype(logits.dtype)
        n, ell = digits.shape
        return logits.new_empty((n,), dtype=dtype), logits.new_empty((n, ell + 1), dtype=dtype)

    @torch.library.register_fake("mdfast::prime_ce_backward")
    def _(grad, logits, *_):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    @torch.library.register_fake("mdfast::prime_sample_step")
    def _(logits, digits, *_):
        return torch.empty_like(digits, memory_format=torch.contiguous_format)

    def _prime_ce_setup_context(ctx, inputs, output):
        logits, target, digits, base, mode, weight = inputs
        ctx.save_for_backward(logits, target, digits, output[1], weight)
        ctx.base, ctx.mode = base, mode
        ctx.mark_non_differentiable(output[1])

    def _prime_ce_backward(ctx, grad_loss, grad_lse):
        logits, target, digits, lse, weight = ctx.saved_tensors
        grad = torch.ops.mdfast.prime_ce_backward(
            grad_loss, logits, target, digits, lse, ctx.base, ctx.mode, weight
        )
        return grad, None, None, None, None, None

    torch.library.register_autograd(
        "mdfast::prime_ce", _prime_ce_backward, setup_context=_prime_ce_setup_context
    )
