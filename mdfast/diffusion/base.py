"""The objective interface shared by every training loss.

An objective is an ``nn.Module`` that owns its backbone (``self.model``) and maps a batch to
``(loss, metrics)`` in ``forward``; ``loss(batch)`` is the same call. A batch is a tensor of token
ids ``[B, ...]``, a dict with ``"input_ids"`` (and optionally ``"attention_mask"``, ``"label"``)
or a tuple (see :func:`unpack`). The trainer wraps the objective (not the bare model) in DDP, so
every parameter an objective owns is trained and synchronised.

Noise: objectives draw through :func:`mdfast.rng.draw` / :func:`mdfast.schedules.sample_t` with a
:class:`mdfast.rng.Purpose` (time, mask, ε, label drop), and backbones use
:class:`mdfast.models.dropout.KeyedDropout`; under an active :class:`mdfast.rng.NoiseKey` (the
trainer and ``mdfast eval`` set one per batch) every draw of a sample is keyed by (seed, purpose,
global step, the sample's index in the global batch), so the batch split does not change it.
"""

from __future__ import annotations

import torch
from torch import nn

from mdfast.losses import token_mean
from mdfast.schedules import sample_t

__all__ = ["Objective", "sample_t", "token_mean", "unpack"]


def unpack(
    batch, names: tuple[str, ...] = ("label",)
) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """``(x0, attention_mask or None, the rest of the batch as a dict)``.

    ``batch``: a tensor of ids; a dict with ``"input_ids"`` (and optionally ``"attention_mask"``
    and any other fields); or a tuple/list ``(x0, *more)`` whose items after the first are named
    by ``names`` (default ``(x0, label)``; an objective on other tuples names its own fields)."""
    if isinstance(batch, torch.Tensor):
        return batch, None, {}
    if isinstance(batch, dict):
        rest = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        return batch["input_ids"], batch.get("attention_mask"), rest
    if isinstance(batch, (list, tuple)):
        return batch[0], None, dict(zip(names, batch[1:], strict=False))
    raise TypeError(f"mdfast: unsupported batch type {type(batch).__name__}")


class Objective(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def loss(self, batch) -> tuple[torch.Tensor, dict]:
        return self(batch)

    def forward(self, batch) -> tuple[torch.Tensor, dict]:  # pragma: no cover - abstract
        raise NotImplementedError
