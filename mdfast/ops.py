"""The op surface of mdfast: thin wrappers over ``torch.ops.mdfast.*``.

Each wrapper runs the compiled kernel when one exists for the tensors' device and otherwise the
pure-PyTorch twin in :mod:`mdfast.reference` (after the same argument checks the kernels make).
Fake (meta) implementations and autograd formulas of the compiled ops are registered here, so
``torch.compile(fullgraph=True)`` traces through every op.
"""

from __future__ import annotations

import math

import torch

from mdfast import reference
from mdfast._extension import _C, has_kernel
from mdfast.prime import prime_base

__all__ = [
    "linear_masked_ce",
    "mask_step",
    "masked_ce",
    "philox4x32",
    "prime_ce",
    "prime_sample_step",
    "sample_x0",
    "uniform",
    "uniform_rows",
]

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


def uniform_rows(
    offsets: torch.Tensor, n: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Uniforms [R, n], row r from its own stream: row r equals
    ``uniform((n,), seed, offsets[r])`` bit for bit (on ``offsets``' device).

    One launch draws noise for a set of rows keyed independently (say, the samples of a batch by
    their global index: :class:`mdfast.rng.NoiseKey`), so a row's numbers do not depend on which
    other rows are drawn with it.

    Args:
        offsets: int64[R], each row's stream offset (read as uint64 bits; not checked on the host).
        n: numbers per row, >= 0.
        seed: key of the streams, in [0, 2^63).
        dtype: torch.float64 (53 bits, default) or torch.float32 (24 bits).
    """
    seed = _check_int(seed, "seed")
    n = _check_int(n, "n")
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(
            f"mdfast: argument 'dtype' must be torch.float64 or torch.float32, got {dtype}"
        )
    if not isinstance(offsets, torch.Tensor) or offsets.dtype != torch.int64:
        raise RuntimeError("mdfast: argument 'offsets' must be an int64 tensor")
    if offsets.dim() != 1:
        raise RuntimeError(
            f"mdfast: argument 'offsets' must be 1-dimensional, got shape {list(offsets.shape)}"
        )
    if has_kernel(offsets.device):
        out = torch.empty((offsets.shape[0], n), dtype=dtype, device=offsets.device)
        torch.ops.mdfast.uniform_rows_out(out, seed, offsets)
        return out
    return reference.uniform_rows(offsets, n, seed, dtype)


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
    if not -1 <= exclude_index < v:
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
        chunk_rows: rows per chunk; None picks about 2^25 / V.

    When gradients are needed, each chunk's gradients (for a unit upstream gradient) are formed
    in the forward while its logits are at hand; the backward scales them when the upstream
    gradient is the same on every row with nonzero weight (``loss.sum()`` / ``.mean()``) and
    otherwise recomputes the chunks.

    Returns:
        float32[N] (float64 for float64 inputs).
    """
    _check_no_grad(row_weight, "row_weight")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or chunk_rows <= 0):
        raise ValueError(f"mdfast: argument 'chunk_rows' must be a positive int, got {chunk_rows}")
    if has_kernel(hidden.device):
        compute_grad = torch.is_grad_enabled() and (
            hidden.requires_grad
            or weight.requires_grad
            or (bias is not None and bias.requires_grad)
        )
        return torch.ops.mdfast.linear_masked_ce(
            hidden, weight, bias, target, row_weight, exclude_index, chunk_rows, compute_grad
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

_LOGITS_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _check_sampling_params(temperature, top_p, top_k, nucleus, seed, offset) -> None:
    if not (
        isinstance(temperature, int | float) and math.isfinite(temperature) and temperature >= 0
    ):
        raise ValueError(
            f"mdfast: argument 'temperature' must be finite and >= 0, got {temperature}"
        )
    if not (isinstance(top_p, int | float) and 0.0 < top_p <= 1.0):
        raise ValueError(f"mdfast: argument 'top_p' must be in (0, 1], got {top_p}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"mdfast: argument 'top_k' must be >= 0, got {top_k}")
    if nucleus not in ("remdm", "hf"):
        raise ValueError(f"mdfast: argument 'nucleus' must be 'remdm' or 'hf', got {nucleus!r}")
    _check_int(seed, "seed")
    _check_int(offset, "offset")


def _check_logits(logits: torch.Tensor, dim: int) -> None:
    if logits.dtype not in _LOGITS_DTYPES:
        raise RuntimeError(
            "mdfast: argument 'logits' must be float32, bfloat16, float16 or float64, "
            f"got {logits.dtype}"
        )
    if logits.dim() != dim:
        raise RuntimeError(
            f"mdfast: argument 'logits' must be {dim}-dimensional, got shape {list(logits.shape)}"
        )
    if logits.shape[-1] == 0:
        raise ValueError("mdfast: argument 'logits' must have at least one class")


def _raise_bad_rows(token: torch.Tensor, row_ids: torch.Tensor, logits: torch.Tensor) -> None:
    """CUDA kernels flag a row they could not sample with token -1; name it (and why)."""
    bad = (token < 0).nonzero()
    if bad.numel() == 0:
        return
    row = int(row_ids[bad[0, 0]])
    if torch.isnan(logits[row]).any():
        raise ValueError(
            f"mdfast: argument 'logits' has a NaN in row {row}, a row that must be sampled"
        )
    raise ValueError(
        f"mdfast: argument 'logits' row {row} has no class to draw (every class excluded or -inf)"
    )


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

    Args:
        logits: [N, V] float32 / bfloat16 / float16 / float64.
        rows: int64 [R] row indices to sample (default: all N rows).
    Returns:
        (token int64 [R], prob float32 [R]): the token and its probability under the truncated
        distribution (at temperature 1 when ``temperature=0``), as used by ReMDM-conf.
    """
    if has_kernel(logits.device):
        on_device = logits.device.type != "cpu" and not torch.compiler.is_compiling()
        if on_device and rows is not None and rows.dtype == torch.int64 and rows.numel():
            # the CUDA kernel cannot raise: check the indices here (the CPU kernel checks itself)
            if int(rows.min()) < 0 or int(rows.max()) >= logits.shape[0]:
                raise IndexError(
                    f"mdfast: argument 'rows' holds indices outside [0, {logits.shape[0]})"
                )
        token, prob = torch.ops.mdfast.sample_x0(
            logits,
            rows,
            float(temperature),
            float(top_p),
            int(top_k),
            int(exclude_index),
            nucleus,
            seed,
            offset,
        )
        if on_device:
            row_ids = torch.arange(logits.shape[0], device=logits.device) if rows is None else rows
            _raise_bad_rows(token, row_ids, logits)
        return token, prob
    _check_logits(logits, 2)
    if rows is not None:
        if rows.dtype != torch.int64:
            raise RuntimeError(
                f"mdfast: argument 'rows' must have dtype torch.int64, got {rows.dtype}"
            )
        if rows.dim() != 1:
            raise RuntimeError(
                f"mdfast: argument 'rows' must be 1-dimensional, got shape {list(rows.shape)}"
            )
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= logits.shape[0]):
            raise IndexError(
                f"mdfast: argument 'rows' holds indices outside [0, {logits.shape[0]})"
            )
    if not -1 <= exclude_index < logits.shape[1]:
        raise ValueError(
            f"mdfast: argument 'exclude_index' must be -1 or in [0, V), got {exclude_index}"
        )
    _check_sampling_params(temperature, top_p, top_k, nucleus, seed, offset)
    return reference.sample_x0(
        logits, rows, temperature, top_p, top_k, exclude_index, nucleus, seed, offset
    )


def _as_alpha(alpha, name: str, B: int, device) -> torch.Tensor:
    a = torch.as_tensor(alpha, dtype=torch.float64, device=device)
    if a.dim() == 0:
        return a.expand(B).contiguous()
    if a.dim() != 1 or a.shape[0] != B:
        raise RuntimeError(
            f"mdfast: argument '{name}' must be a scalar or have shape [B] = [{B}], "
            f"got {list(a.shape)}"
        )
    return a.contiguous()


def _as_sigma(remask, B: int, L: int, device) -> torch.Tensor | None:
    if remask is None:
        return None
    r = torch.as_tensor(remask, dtype=torch.float64, device=device)
    if r.dim() == 1 and r.shape[0] == B:
        r = r[:, None]
    if r.dim() > 2:
        raise RuntimeError(
            f"mdfast: argument 'remask' must be a scalar, [B] or [B, L], got {list(r.shape)}"
        )
    try:
        return r.expand(B, L).contiguous()
    except RuntimeError:
        raise RuntimeError(
            f"mdfast: argument 'remask' must be a scalar, [B] or [B, L] = [{B}, {L}], "
            f"got {list(r.shape)}"
        ) from None


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

    ``alpha_t``, ``alpha_s``: scalars or per batch row [B], 0 <= alpha_t <= alpha_s <= 1.
    Logits rows of positions that do not unmask are never read. With ``logits=None`` only the
    events are drawn: an unmasking position keeps the mask id in ``x_next`` with ``changed``
    True, and the caller draws its token (e.g. from an output head run on those rows only).

    Returns:
        (x_next int64 [B, L], changed bool [B, L], confidence float32 [B, L]) where confidence is
        ReMDM's bookkeeping: -p(token) where a position unmasks, -inf where it remasks, the input
        ``confidence`` (default -inf) elsewhere.
    """
    B, L = (x.shape[0], x.shape[1]) if x.dim() == 2 else (0, 0)
    if x.dim() == 2:
        alpha_t = _as_alpha(alpha_t, "alpha_t", B, x.device)
        alpha_s = _as_alpha(alpha_s, "alpha_s", B, x.device)
        remask = _as_sigma(remask, B, L, x.device)
    kernel = has_kernel(x.device)
    if not kernel or (x.device.type != "cpu" and not torch.compiler.is_compiling()):
        _check_mask_step_values(x, logits, alpha_t, alpha_s, remask, mask_index)
    if kernel:
        x_next, changed, conf = torch.ops.mdfast.mask_step(
            x,
            logits,
            alpha_t,
            alpha_s,
            remask,
            confidence,
            int(mask_index),
            float(temperature),
            float(top_p),
            int(top_k),
            nucleus,
            seed,
            offset,
        )
        if logits is not None and x.device.type != "cpu" and not torch.compiler.is_compiling():
            _raise_bad_rows(
                x_next.reshape(-1), torch.arange(B * L, device=x.device), logits.reshape(B * L, -1)
            )
        return x_next, changed, conf
    if confidence is not None and (
        confidence.dtype != torch.float32 or confidence.shape != x.shape
    ):
        raise RuntimeError(
            f"mdfast: argument 'confidence' must be float32 of shape {list(x.shape)}"
        )
    _check_sampling_params(temperature, top_p, top_k, nucleus, seed, offset)
    return reference.mask_step(
        x,
        logits,
        alpha_t,
        alpha_s,
        remask,
        confidence,
        mask_index,
        temperature,
        top_p,
        top_k,
        nucleus,
        seed,
        offset,
    )


def _check_mask_step_values(x, logits, alpha_t, alpha_s, remask, mask_index) -> None:
    if x.dtype != torch.int64:
        raise RuntimeError(f"mdfast: argument 'x' must have dtype torch.int64, got {x.dtype}")
    if x.dim() != 2:
        raise RuntimeError(f"mdfast: argument 'x' must be 2-dimensional, got shape {list(x.shape)}")
    if logits is not None:
        _check_logits(logits, 3)
        if tuple(logits.shape[:2]) != tuple(x.shape):
            raise RuntimeError(
                "mdfast: argument 'logits' must have shape [B, L, V] matching 'x' "
                f"{list(x.shape)}, got {list(logits.shape)}"
            )
        V = logits.shape[2]
        if not 0 <= mask_index < V:
            raise ValueError(f"mdfast: argument 'mask_index' must be in [0, V), got {mask_index}")
    else:
        V = None
        if mask_index < 0:
            raise ValueError(f"mdfast: argument 'mask_index' must be >= 0, got {mask_index}")
    if x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or (V is not None and hi >= V):
            raise ValueError(
                f"mdfast: argument 'x' holds ids outside [0, V={V}): min {lo}, max {hi}"
            )
    for a, name in ((alpha_t, "alpha_t"), (alpha_s, "alpha_s")):
        if a.numel() and not bool(((a >= 0) & (a <= 1)).all()):
            raise ValueError(f"mdfast: argument '{name}' must be in [0, 1], got {a.tolist()}")
    if alpha_t.numel() and bool((alpha_s < alpha_t).any()):
        raise ValueError(
            "mdfast: argument 'alpha_s' must be >= 'alpha_t' (time runs from t to s < t), "
            f"got alpha_s={alpha_s.tolist()} alpha_t={alpha_t.tolist()}"
        )
    if remask is not None and remask.numel() and not bool(((remask >= 0) & (remask <= 1)).all()):
        raise ValueError("mdfast: argument 'remask' must be in [0, 1]")


# ---------------------------------------------------------------------------------------------
# MDM-Prime sub-tokens (issue 5)
# ---------------------------------------------------------------------------------------------


_PRIME_MAX_DIGITS = 16


def _prime_check_common(logits: torch.Tensor, digits: torch.Tensor, base) -> int:
    """The checks the kernels make (csrc/common/prime_args.h); returns the resolved base."""
    if not logits.dtype.is_floating_point:
        raise RuntimeError(
            f"mdfast: argument 'logits' must be a floating tensor, got {logits.dtype}"
        )
    if logits.dim() != 2:
        raise RuntimeError(
            f"mdfast: argument 'logits' must be 2-dimensional, got {list(logits.shape)}"
        )
    if digits.dtype != torch.int64:
        raise RuntimeError(
            f"mdfast: argument 'digits' must have dtype torch.int64, got {digits.dtype}"
        )
    if digits.dim() != 2:
        raise RuntimeError(
            f"mdfast: argument 'digits' must be 2-dimensional, got {list(digits.shape)}"
        )
    if digits.device != logits.device:
        raise RuntimeError(
            f"mdfast: argument 'digits' is on {digits.device} but 'logits' is on {logits.device}"
        )
    if digits.shape[0] != logits.shape[0]:
        raise RuntimeError(
            f"mdfast: argument 'digits' must have {logits.shape[0]} rows, got {digits.shape[0]}"
        )
    ell, num_classes = digits.shape[1], logits.shape[1]
    if not 1 <= ell <= _PRIME_MAX_DIGITS:
        raise RuntimeError(
            f"mdfast: argument 'digits' must have between 1 and {_PRIME_MAX_DIGITS} columns, "
            f"got {ell}"
        )
    if num_classes < 1:
        raise RuntimeError("mdfast: argument 'logits' must have at least one class")
    if base is None:
        base = prime_base(num_classes, ell)
    if isinstance(base, bool) or not isinstance(base, int):
        raise TypeError(f"mdfast: argument 'base' must be an int, got {type(base).__name__}")
    if base < 2:
        raise ValueError(f"mdfast: argument 'base' must be >= 2, got {base}")
    if base**ell < num_classes:
        raise ValueError(
            f"mdfast: argument 'base' is too small: base^ell = {base}^{ell} < C = {num_classes} "
            f"(MDM-Prime uses base = ceil(C^(1/ell)) = {prime_base(num_classes, ell)})"
        )
    return base


def _prime_validate_rows(digits, base, num_classes, target=None) -> None:
    """Per-row digit checks (digits.h ``validate_token``), naming the first bad row."""
    if digits.numel() == 0:
        return
    ell = digits.shape[1]
    bad_digit = ((digits < 0) | (digits > base)).any(1)
    powers = torch.tensor(
        [base ** (ell - 1 - j) for j in range(ell)], dtype=torch.int64, device=digits.device
    )
    smallest = (torch.where(digits == base, 0, digits.clamp(0, base)) * powers).sum(1)
    empty = ~bad_digit & (smallest >= num_classes)
    for kind, rows in (("digit", bad_digit), ("empty", empty)):
        if rows.any():
            row = int(rows.nonzero()[0, 0])
            d = digits[row].tolist()
            if kind == "digit":
                raise ValueError(
                    f"mdfast: argument 'digits' row {row} = {d} holds a digit outside "
                    f"[0, base] = [0, {base}] ({base} is the mask id)"
                )
            raise ValueError(
                f"mdfast: argument 'digits' row {row} = {d} allows no class < C = {num_classes} "
                "(its visible digits form an invalid code)"
            )
    if target is None:
        return
    out_of_range = (target < 0) | (target >= num_classes)
    if out_of_range.any():
        row = int(out_of_range.nonzero()[0, 0])
        raise ValueError(
            f"mdfast: argument 'target' row {row} = {int(target[row])} is outside [0, C) = "
            f"[0, {num_classes})"
        )
    tdig = torch.div(target[:, None], powers, rounding_mode="floor") % base
    inconsistent = ((digits != base) & (digits != tdig)).any(1)
    if inconsistent.any():
        row = int(inconsistent.nonzero()[0, 0])
        raise ValueError(
            f"mdfast: argument 'target' row {row} = {int(target[row])} is inconsistent with the "
            f"visible digits {digits[row].tolist()} of that row"
        )


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
    keeps ℓ+1 online log-sum-exps per row and walks only V_i (|V_i| ≤ b^#masked).

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
    base = _prime_check_common(logits, digits, base)
    if has_kernel(logits.device):
        return torch.ops.mdfast.prime_ce(logits, target, digits, base, mode, weight)[0]
    if target.dtype != torch.int64:
        raise RuntimeError(
            f"mdfast: argument 'target' must have dtype torch.int64, got {target.dtype}"
        )
    if target.shape != (logits.shape[0],):
        raise RuntimeError(
            f"mdfast: argument 'target' must have shape [{logits.shape[0]}], "
            f"got {list(target.shape)}"
        )
    if mode not in ("joint", "elbo"):
        raise ValueError(f"mdfast: argument 'mode' must be 'joint' or 'elbo', got '{mode}'")
    if weight is not None and (
        weight.dtype not in (torch.float32, torch.float64) or weight.shape != (logits.shape[0],)
    ):
        raise RuntimeError(
            f"mdfast: argument 'weight' must be float32/float64 of shape [{logits.shape[0]}]"
        )
    _prime_validate_rows(digits, base, logits.shape[1], target)
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
    visible digits at rate β(t)) is not part of this op (see ``mdfast.diffusion.Prime``).

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
    base = _prime_check_common(logits, digits, base)
    seed = _check_int(seed, "seed")
    offset = _check_int(offset, "offset")
    if has_kernel(logits.device):
        return torch.ops.mdfast.prime_sample_step(
            logits,
            digits,
            base,
            float(alpha_t),
            float(alpha_s),
            float(temperature),
            mode,
            fixed_digits,
            seed,
            offset,
        )
    if not 0.0 <= alpha_t <= 1.0:
        raise ValueError(f"mdfast: argument 'alpha_t' must lie in [0, 1], got {alpha_t}")
    if not alpha_t <= alpha_s <= 1.0:
        raise ValueError(f"mdfast: argument 'alpha_s' must lie in [alpha_t, 1], got {alpha_s}")
    if not 0.0 < temperature < 1e300:
        raise ValueError(
            f"mdfast: argument 'temperature' must be a positive finite number, got {temperature}"
        )
    if mode not in ("exact", "marginal"):
        raise ValueError(f"mdfast: argument 'mode' must be 'exact' or 'marginal', got '{mode}'")
    if fixed_digits is not None:
        if fixed_digits.dtype != torch.int64 or fixed_digits.dim() != 1:
            raise RuntimeError(
                "mdfast: argument 'fixed_digits' must be a 1-dimensional int64 tensor"
            )
        if fixed_digits.numel() and (
            int(fixed_digits.min()) < 0 or int(fixed_digits.max()) >= digits.shape[1]
        ):
            raise ValueError(
                f"mdfast: argument 'fixed_digits' holds values outside the digit positions "
                f"[0, {digits.shape[1]})"
            )
    _prime_validate_rows(digits, base, logits.shape[1])
    return reference.prime_sample_step(
        logits,
        digits,
        base,
        float(alpha_t),
        float(alpha_s),
        float(temperature),
        mode,
        fixed_digits,
        seed,
        offset,
    )


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

    @torch.library.register_fake("mdfast::uniform_rows_out")
    def _uniform_rows_out_fake(out, seed, offsets):
        return None

    # --- masked cross-entropy (issue 3) ---

    @torch.library.register_fake("mdfast::masked_ce")
    def _masked_ce_fake(logits, target, weight, exclude_index=-1, inplace_backward=False):
        torch._check(logits.dim() == 2, lambda: "logits must be [N, V]")
        acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
        n = logits.shape[0]
        return logits.new_empty((n,), dtype=acc), logits.new_empty((n,), dtype=acc)

    @torch.library.register_fake("mdfast::masked_ce_backward")
    def _masked_ce_backward_fake(grad_loss, logits, target, weight, lse, exclude_index):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    @torch.library.register_fake("mdfast::masked_ce_backward_")
    def _masked_ce_backward_inplace_fake(grad_loss, logits, target, weight, lse, exclude_index):
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
    def _linear_masked_ce_fake(
        hidden,
        weight,
        bias,
        target,
        row_weight,
        exclude_index=-1,
        chunk_rows=None,
        compute_grad=False,
    ):
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        n, d = hidden.shape
        v = weight.shape[0]
        loss = hidden.new_empty((n,), dtype=acc)
        lse = hidden.new_empty((n,), dtype=acc)
        if not compute_grad:
            empty = hidden.new_empty((0,), dtype=acc)
            return loss, lse, empty, empty.clone(), empty.clone()
        gb = hidden.new_empty((v,) if bias is not None else (0,), dtype=acc)
        return (
            loss,
            lse,
            hidden.new_empty((n, d), dtype=acc),
            hidden.new_empty((v, d), dtype=acc),
            gb,
        )

    @torch.library.register_fake("mdfast::linear_masked_ce_backward")
    def _linear_masked_ce_backward_fake(
        grad_loss,
        hidden,
        weight,
        bias,
        target,
        row_weight,
        lse,
        gh,
        gw,
        gb,
        exclude_index,
        chunk_rows,
    ):
        return (
            torch.empty_like(hidden, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            hidden.new_empty((weight.shape[0],) if bias is not None else (0,)),
        )

    def _linear_masked_ce_setup_context(ctx, inputs, output):
        hidden, weight, bias, target, row_weight, exclude_index, chunk_rows, _ = inputs
        _, lse, gh, gw, gb = output
        ctx.save_for_backward(hidden, weight, bias, target, row_weight, lse, gh, gw, gb)
        ctx.exclude_index = exclude_index
        ctx.chunk_rows = chunk_rows
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(lse, gh, gw, gb)

    def _linear_masked_ce_backward(ctx, grad_loss, *_):
        hidden, weight, bias, target, row_weight, lse, gh, gw, gb = ctx.saved_tensors
        grad_hidden, grad_weight, grad_bias = torch.ops.mdfast.linear_masked_ce_backward(
            grad_loss,
            hidden,
            weight,
            bias,
            target,
            row_weight,
            lse,
            gh,
            gw,
            gb,
            ctx.exclude_index,
            ctx.chunk_rows,
        )
        return (
            grad_hidden,
            grad_weight,
            grad_bias if ctx.has_bias else None,
            None,
            None,
            None,
            None,
            None,
        )

    torch.library.register_autograd(
        "mdfast::linear_masked_ce",
        _linear_masked_ce_backward,
        setup_context=_linear_masked_ce_setup_context,
    )

    # --- sampling (issue 4) ---
    @torch.library.register_fake("mdfast::sample_x0")
    def _sample_x0_fake(
        logits, rows, temperature, top_p, top_k, exclude_index, nucleus, seed, offset
    ):
        torch._check(logits.dim() == 2, lambda: "logits must be [N, V]")
        R = logits.shape[0] if rows is None else rows.shape[0]
        return (
            logits.new_empty((R,), dtype=torch.int64),
            logits.new_empty((R,), dtype=torch.float32),
        )

    @torch.library.register_fake("mdfast::mask_step")
    def _mask_step_fake(
        x,
        logits,
        alpha_t,
        alpha_s,
        remask,
        confidence,
        mask_index,
        temperature,
        top_p,
        top_k,
        nucleus,
        seed,
        offset,
    ):
        torch._check(x.dim() == 2, lambda: "x must be [B, L]")
        return (
            torch.empty_like(x),
            x.new_empty(x.shape, dtype=torch.bool),
            x.new_empty(x.shape, dtype=torch.float32),
        )

    # --- MDM-Prime sub-tokens (issue 5) ---
    @torch.library.register_fake("mdfast::prime_ce")
    def _prime_ce_fake(logits, target, digits, base, mode, weight):
        torch._check(logits.dim() == 2 and digits.dim() == 2, lambda: "prime_ce: bad ranks")
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        n, ell = digits.shape
        return logits.new_empty((n,), dtype=dtype), logits.new_empty((n, ell + 1), dtype=dtype)

    @torch.library.register_fake("mdfast::prime_ce_backward")
    def _prime_ce_backward_fake(grad, logits, target, digits, lse, base, mode, weight):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    @torch.library.register_fake("mdfast::prime_sample_step")
    def _prime_sample_step_fake(
        logits, digits, base, alpha_t, alpha_s, temperature, mode, fixed_digits, seed, offset
    ):
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
