"""Training losses of masked diffusion built on :func:`mdfast.ops.masked_ce`.

:func:`subs_loss` is MDLM's continuous-time SUBS NELBO term per token. MDLM computes it by adding
-1e6 to the mask logit, log-normalising the full B x L x V tensor, overwriting unmasked rows
(carry-over) and gathering; here one fused op computes the same numbers (the mask class is left
out of the softmax, which equals MDLM's -1e6 offset up to float rounding) and never reads the
logits of unmasked positions.
"""

from __future__ import annotations

import torch

from mdfast import ops
from mdfast.schedules import LogLinearSchedule, Schedule

__all__ = ["subs_loss", "token_mean"]


def subs_loss(
    logits: torch.Tensor,
    x0: torch.Tensor,
    xt: torch.Tensor,
    mask_index: int,
    t: torch.Tensor,
    schedule: Schedule | None = None,
    *,
    inplace_backward: bool = False,
) -> torch.Tensor:
    """Per-token SUBS loss of MDLM:

        loss[b, l] = w(t_b) * (-log softmax_{v != mask}(logits[b, l])[x0[b, l]])  if xt[b, l] is
                     the mask token, else 0,      w(t) = -alpha'(t) / (1 - alpha(t))

    (``w = 1/t`` for the log-linear schedule). Unmasked positions contribute 0 (carry-over) and
    their logits are never read. Reduce with :func:`token_mean` (MDLM averages over the attention
    mask).

    Args:
        logits: [B, L, V] (or [..., V]) raw model outputs, float32 / bfloat16 / float16.
        x0: int64 [B, L] clean tokens; xt: int64 [B, L] noised tokens.
        mask_index: id of the mask token; left out of the softmax.
        t: [B] (one time per sequence) or [B, L] (per token) diffusion times in (0, 1].
        schedule: noise schedule (default :class:`~mdfast.schedules.LogLinearSchedule`).
        inplace_backward: see :func:`mdfast.ops.masked_ce` (the backward overwrites ``logits``).

    Returns:
        float32 [B, L] (float64 for float64 logits).
    """
    schedule = LogLinearSchedule() if schedule is None else schedule
    lead = logits.shape[:-1]
    if x0.shape != lead or xt.shape != lead:
        raise RuntimeError(
            f"mdfast: arguments 'x0' and 'xt' must have shape {list(lead)} (logits' leading "
            f"dims), got {list(x0.shape)} and {list(xt.shape)}"
        )
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    t = t.detach().to(acc)
    if t.shape != lead:
        if t.dim() == 0 or t.shape[0] != lead[0] or t.dim() > len(lead):
            raise RuntimeError(
                f"mdfast: argument 't' must have shape [{lead[0]}] or {list(lead)}, got "
                f"{list(t.shape)}"
            )
        t = t.reshape(*t.shape, *([1] * (len(lead) - t.dim())))
    masked = xt == mask_index
    w = torch.where(masked, schedule.loss_weight(t).to(acc), 0.0)
    v = logits.shape[-1]
    loss = ops.masked_ce(
        logits.reshape(-1, v),
        x0.reshape(-1),
        w.reshape(-1),
        exclude_index=mask_index,
        inplace_backward=inplace_backward,
    )
    return loss.reshape(lead)


def token_mean(loss: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MDLM's reduction: ``sum(loss * attention_mask) / sum(attention_mask)`` (plain mean when
    ``attention_mask`` is None)."""
    if attention_mask is None:
        return loss.mean()
    m = attention_mask.to(loss.dtype)
    return (loss * m).sum() / m.sum()
