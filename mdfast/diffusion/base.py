"""The objective interface shared by every training loss.

An objective is an ``nn.Module`` that owns its backbone (``self.model``) and maps a batch to
``(loss, metrics)`` in ``forward``; ``loss(batch)`` is the same call. A batch is a tensor of token
ids ``[B, ...]`` or a dict with ``"input_ids"`` (and optionally ``"attention_mask"``,
``"label"``). The trainer wraps the objective (not the bare model) in DDP, so every parameter an
objective owns is trained and synchronised.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Objective", "masked_mean", "sample_t", "unpack"]


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """``(x0, attention_mask or None, the rest of the batch)``."""
    if isinstance(batch, torch.Tensor):
        return batch, None, {}
    if isinstance(batch, dict):
        rest = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        return batch["input_ids"], batch.get("attention_mask"), rest
    if isinstance(batch, (list, tuple)):
        return batch[0], None, {"label": batch[1]} if len(batch) > 1 else {}
    raise TypeError(f"mdfast: unsupported batch type {type(batch).__name__}")


def sample_t(n: int, device, eps: float = 1e-3, antithetic: bool = True) -> torch.Tensor:
    """MDLM's ``_sample_t``: t ∈ [eps, 1]; antithetic = stratified ``(u/n + i/n) mod 1``."""
    u = torch.rand(n, device=device)
    if antithetic:
        u = (u / n + torch.arange(n, device=device) / n) % 1
    return (1 - eps) * u + eps


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Σ values·mask / Σ mask (MDLM's token mean over the attention mask)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


class Objective(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def loss(self, batch) -> tuple[torch.Tensor, dict]:
        return self(batch)

    def forward(self, batch) -> tuple[torch.Tensor, dict]:  # pragma: no cover - abstract
        raise NotImplementedError
