"""Sampling ops (``csrc/cpu/sampling.cpp``, ``csrc/cuda/sampling.cu``): the exact draw of x0 from
logits rows, ``sample_x0``, and the fused MDLM / ReMDM reverse step, ``mask_step``; their
contracts and fake impls (no gradients)."""

from __future__ import annotations

import math

import torch

from mdfast import _extension, reference
from mdfast.ops import _checks as check
from mdfast.ops._validation import checks_values_here

__all__ = ["mask_step", "sample_x0"]

LOGITS_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_MAX_CLASSES = 2**31


# ------------------------------------------------------------------------------------ contract
# (csrc/common/sampling_args.h)


def check_sampling_params(temperature, top_p, top_k, nucleus, seed, offset) -> None:
    if not (check.is_real(temperature) and math.isfinite(temperature) and temperature >= 0):
        check.fail(f"argument 'temperature' must be finite and >= 0, got {temperature}", ValueError)
    if not (check.is_real(top_p) and 0.0 < top_p <= 1.0):
        check.fail(f"argument 'top_p' must be in (0, 1], got {top_p}", ValueError)
    if not check.is_int(top_k) or top_k < 0:
        check.fail(f"argument 'top_k' must be >= 0, got {top_k}", ValueError)
    check.arg_int(seed, "seed")
    check.arg_int(offset, "offset")
    if nucleus not in ("remdm", "hf"):
        check.fail(f"argument 'nucleus' must be 'remdm' or 'hf', got {nucleus!r}", ValueError)


def _check_logits(logits: torch.Tensor, dim: int) -> None:
    check.dtype_in(logits, "logits", LOGITS_DTYPES)
    check.dim(logits, "logits", dim)
    if logits.shape[-1] >= _MAX_CLASSES:
        check.fail("argument 'logits' must have fewer than 2^31 classes", ValueError)


def check_sample_x0_args(
    logits, rows, temperature, top_p, top_k, exclude_index, nucleus, seed, offset
):
    _check_logits(logits, 2)
    if logits.shape[1] == 0:
        check.fail("argument 'logits' must have at least one class", ValueError)
    if rows is not None:
        check.dtype(rows, "rows", torch.int64)
        check.dim(rows, "rows", 1)
        check.same_device(rows, "rows", logits, "logits")
    if not -1 <= exclude_index < logits.shape[1]:
        check.fail(
            f"argument 'exclude_index' must be -1 or in [0, V), got {exclude_index}", ValueError
        )
    check_sampling_params(temperature, top_p, top_k, nucleus, seed, offset)


def _as_alpha(alpha, name: str, B: int, device: torch.device) -> torch.Tensor:
    """A scalar or [B] -> float64[B] on ``device``, without reading a device value on the host."""
    if not isinstance(alpha, torch.Tensor) or (alpha.dim() == 0 and alpha.device.type == "cpu"):
        return torch.full((B,), float(alpha), dtype=torch.float64, device=device)
    a = alpha.to(device=device, dtype=torch.float64, non_blocking=True)
    if a.dim() == 0:
        return a.expand(B).contiguous()
    if a.dim() != 1 or a.shape[0] != B:
        check.fail(
            f"argument '{name}' must be a scalar or have shape [B] = [{B}], got {list(a.shape)}"
        )
    return a.contiguous()


def _as_sigma(remask, B: int, L: int, device: torch.device) -> torch.Tensor | None:
    """None, a scalar, [B] or [B, L] -> None or float64[B, L] on ``device``."""
    if remask is None:
        return None
    if not isinstance(remask, torch.Tensor) or (remask.dim() == 0 and remask.device.type == "cpu"):
        return torch.full((B, L), float(remask), dtype=torch.float64, device=device)
    r = remask.to(device=device, dtype=torch.float64, non_blocking=True)
    if r.dim() == 1 and r.shape[0] == B:
        r = r[:, None]
    if r.dim() > 2 or not all(s in (1, n) for s, n in zip(reversed(r.shape), (L, B), strict=False)):
        check.fail(
            f"argument 'remask' must be a scalar, [B] or [B, L] = [{B}, {L}], got {list(r.shape)}"
        )
    return r.expand(B, L).contiguous()


def check_mask_step_args(
    x, logits, alpha_t, alpha_s, remask, confidence, mask_index, temperature, top_p, top_k,
    nucleus, seed, offset,
):  # fmt: skip
    """The contract of :func:`mask_step`; returns (alpha_t, alpha_s, remask) as the kernel takes
    them: float64 [B], [B] and [B, L] (or None) on x's device."""
    check.dtype(x, "x", torch.int64)
    check.dim(x, "x", 2)
    B, L = x.shape
    if logits is not None:
        _check_logits(logits, 3)
        if tuple(logits.shape[:2]) != (B, L):
            check.fail(
                f"argument 'logits' must have shape [B, L, V] matching 'x' {list(x.shape)}, got "
                f"{list(logits.shape)}"
            )
        check.same_device(logits, "logits", x, "x")
        if not 0 <= mask_index < logits.shape[2]:
            check.fail(f"argument 'mask_index' must be in [0, V), got {mask_index}", ValueError)
    else:
        check.non_negative(mask_index, "mask_index")
    alpha_t = _as_alpha(alpha_t, "alpha_t", B, x.device)
    alpha_s = _as_alpha(alpha_s, "alpha_s", B, x.device)
    remask = _as_sigma(remask, B, L, x.device)
    if confidence is not None:
        check.dtype(confidence, "confidence", torch.float32)
        check.shape(confidence, "confidence", (B, L))
        check.same_device(confidence, "confidence", x, "x")
    check_sampling_params(temperature, top_p, top_k, nucleus, seed, offset)
    return alpha_t, alpha_s, remask


# ---------------------------------------------------------------------------- value checks


def check_rows_values(rows: torch.Tensor, n: int) -> None:
    """Row indices in [0, N) (the CPU kernel's check); reads ``rows`` on the host."""
    row = check.first_true((rows < 0) | (rows >= n))
    if row is not None:
        check.fail(f"argument 'rows' holds {int(rows[row])}, outside [0, {n})", IndexError)


def check_mask_step_values(x, v, alpha_t, alpha_s, remask) -> None:
    """The value checks of the CPU kernel in its order: per batch row α_t ∈ [0, 1], α_s ∈ [0, 1],
    α_s >= α_t; then ids of x in [0, V); then σ ∈ [0, 1]. Reads the tensors on the host."""
    bad_t = ~((alpha_t >= 0) & (alpha_t <= 1))
    bad_s = ~((alpha_s >= 0) & (alpha_s <= 1))
    bad_order = alpha_s < alpha_t
    b = check.first_true(bad_t | bad_s | bad_order)
    if b is not None:
        if bad_t[b]:
            check.fail(f"argument 'alpha_t' must be in [0, 1], got {alpha_t[b].item()}", ValueError)
        if bad_s[b]:
            check.fail(f"argument 'alpha_s' must be in [0, 1], got {alpha_s[b].item()}", ValueError)
        check.fail(
            "argument 'alpha_s' must be >= 'alpha_t' (time runs from t to s < t), got "
            f"alpha_s={alpha_s[b].item()} < alpha_t={alpha_t[b].item()}",
            ValueError,
        )
    flat = x.reshape(-1)
    i = check.first_true((flat < 0) | (flat >= v) if v is not None else flat < 0)
    if i is not None:
        check.fail(
            f"argument 'x' holds {int(flat[i])} at position {i}, outside [0, V={v})", ValueError
        )
    if remask is not None:
        sigma = remask.reshape(-1)
        i = check.first_true(~((sigma >= 0) & (sigma <= 1)))
        if i is not None:
            check.fail(
                f"argument 'remask' must be in [0, 1], got {sigma[i].item()} at position {i}",
                ValueError,
            )


def raise_unsampled_rows(token: torch.Tensor, row_ids: torch.Tensor, logits: torch.Tensor) -> None:
    """The CUDA kernels mark a row they could not sample with token -1: name the first such row
    and why, as the CPU kernel does. Reads the tensors on the host."""
    r = check.first_true(token < 0)
    if r is None:
        return
    row = int(row_ids[r])
    if torch.isnan(logits[row]).any():
        check.fail(
            f"argument 'logits' has a NaN in row {row}, a row that must be sampled", ValueError
        )
    check.fail(
        f"argument 'logits' row {row} has no class to draw (every class excluded or -inf)",
        ValueError,
    )


# ------------------------------------------------------------------------------------ wrappers


def sample_x0(
    logits: torch.Tensor,
    rows: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    exclude_index: int = -1,
    nucleus: str = "remdm",
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact draw of x0 from logits rows: c ~ softmax(z / tau) with class ``exclude_index``
    removed, truncated by top-k and then top-p, by Gumbel-max in float64 (53-bit uniforms).

    * Ranking: classes by logit descending (float32 precision), ties by smaller index.
    * top-k keeps the k highest; top-p (on the renormalised top-k distribution), ReMDM
      (``nucleus="remdm"``, default): keep the classes whose cumulative mass is <= p, always the
      top-1; HF (``nucleus="hf"``): also keep the class that crosses p. Masses are summed in 2^-62
      fixed point, so the cut does not depend on summation order.
    * ``temperature=0`` is the argmax (ties to the smaller index).

    Reads only the requested rows: one pass for the log-sum-exp, the radix select of the
    truncation threshold when truncating (no V-sized buffer on the GPU), one pass for the draw.
    The noise of class c of row r is Philox sub-stream 1, element r * V + c, so a row's token does
    not depend on which other rows are requested, and CPU and CUDA draw the same tokens.

    A row that cannot be sampled (a NaN among its allowed classes, nothing left to draw) raises
    naming it; on GPU only with :func:`mdfast.set_validation` ``("full")``, otherwise its token
    is -1 (as is that of an index in ``rows`` outside the logits).

    Args:
        logits: [N, V] float32 / bfloat16 / float16 / float64.
        rows: int64 [R] row indices to sample (default: all N rows).
    Returns:
        (token int64 [R], prob float32 [R]): the token and its probability under the truncated
        distribution (at temperature 1 when ``temperature=0``), as used by ReMDM-conf.
    """
    check_sample_x0_args(
        logits, rows, temperature, top_p, top_k, exclude_index, nucleus, seed, offset
    )
    kernel = _extension.has_kernel(logits.device)
    validate = checks_values_here(logits.device, kernel)
    if validate and rows is not None:
        check_rows_values(rows, logits.shape[0])
    if not kernel:
        return reference.sample_x0(
            logits, rows, temperature, top_p, top_k, exclude_index, nucleus, seed, offset
        )
    token, prob = torch.ops.mdfast.sample_x0(
        logits, rows, float(temperature), float(top_p), int(top_k), int(exclude_index), nucleus,
        int(seed), int(offset),
    )  # fmt: skip
    if validate:
        row_ids = torch.arange(logits.shape[0], device=logits.device) if rows is None else rows
        raise_unsampled_rows(token, row_ids, logits)
    return token, prob


def mask_step(
    x: torch.Tensor,
    logits: torch.Tensor | None = None,
    *,
    mask_index: int,
    alpha_t,
    alpha_s,
    remask=None,
    confidence: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    nucleus: str = "remdm",
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fused reverse step t -> s of a masked diffusion model (MDLM, ReMDM), O(1) work per
    position plus one :func:`sample_x0` row per unmasking position.

    With u_i the event uniform of position i (Philox sub-stream 0, element b * L + l) and
    sigma_i the remasking probability (``remask``: scalar, [B] or [B, L]; 0 when None):

    * masked position: unmask if u_i < (alpha_s - (1 - sigma_i) alpha_t) / (1 - alpha_t)
      (clamped to [0, 1]; for sigma = 0 the MDLM step (alpha_s - alpha_t) / (1 - alpha_t)), the
      token drawn from ``logits[b, l]`` (mask class excluded, temperature / top-k / top-p as in
      :func:`sample_x0`, same seed and offset); else stay masked with probability
      (1 - alpha_s - sigma_i alpha_t) / (1 - alpha_t);
    * decoded position: remask with probability sigma_i, else carry over unchanged.

    ``alpha_t``, ``alpha_s``: scalars or per batch row [B], 0 <= alpha_t <= alpha_s <= 1 (a
    Python scalar becomes a device tensor by a fill kernel, never a host-to-device copy that
    waits). Logits rows of positions that do not unmask are never read. With ``logits=None``
    only the events are drawn: an unmasking position keeps the mask id in ``x_next`` with
    ``changed`` True, and the caller draws its token (e.g. from an output head run on those rows
    only). On GPU, values (alphas, sigma, ids, unsampleable rows) are checked only with
    :func:`mdfast.set_validation` ``("full")``; otherwise a row that cannot be sampled gets -1.

    Returns:
        (x_next int64 [B, L], changed bool [B, L], confidence float32 [B, L]) where confidence is
        ReMDM's bookkeeping: -p(token) where a position unmasks, -inf where it remasks, the input
        ``confidence`` (default -inf) elsewhere.
    """
    alpha_t, alpha_s, remask = check_mask_step_args(
        x, logits, alpha_t, alpha_s, remask, confidence, mask_index, temperature, top_p, top_k,
        nucleus, seed, offset,
    )  # fmt: skip
    kernel = _extension.has_kernel(x.device)
    validate = checks_values_here(x.device, kernel)
    if validate:
        v = None if logits is None else logits.shape[2]
        check_mask_step_values(x, v, alpha_t, alpha_s, remask)
    if not kernel:
        return reference.mask_step(
            x, logits, alpha_t, alpha_s, remask, confidence, mask_index, temperature, top_p,
            top_k, nucleus, seed, offset,
        )  # fmt: skip
    x_next, changed, conf = torch.ops.mdfast.mask_step(
        x, logits, alpha_t, alpha_s, remask, confidence, int(mask_index), float(temperature),
        float(top_p), int(top_k), nucleus, int(seed), int(offset),
    )  # fmt: skip
    if validate and logits is not None:
        B, L = x.shape
        raise_unsampled_rows(
            x_next.reshape(-1), torch.arange(B * L, device=x.device), logits.reshape(B * L, -1)
        )
    return x_next, changed, conf


# ------------------------------------------------------------------------------------ fakes

if _extension.has_ops:

    @torch.library.register_fake("mdfast::sample_x0")
    def _(logits, rows, *_):
        torch._check(logits.dim() == 2, lambda: "logits must be [N, V]")
        R = logits.shape[0] if rows is None else rows.shape[0]
        return logits.new_empty((R,), dtype=torch.int64), logits.new_empty(
            (R,), dtype=torch.float32
        )

    @torch.library.register_fake("mdfast::mask_step")
    def _(x, *_):
        torch._check(x.dim() == 2, lambda: "x must be [B, L]")
        return (
            torch.empty_like(x),
            x.new_empty(x.shape, dtype=torch.bool),
            x.new_empty(x.shape, dtype=torch.float32),
        )
