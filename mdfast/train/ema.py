"""Exponential moving average of parameters, state in MDLM's format
(``{"decay", "num_updates", "shadow_params": [...]}`` in ``parameters()`` order)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EMA"]


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class EMA:
    """``shadow ← d·shadow + (1−d)·param`` after each optimiser step, fp32 shadows.

    With ``warmup`` the decay is ``min(decay, (1 + n)/(10 + n))`` (MDLM / MDM-Prime ``ema.py``).
    """

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.shadow_params = [p.detach().float().clone() for p in self.params]

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        d = self.current_decay()
        for s, p in zip(self.shadow_params, self.params, strict=True):
            s.lerp_(p.detach().float(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, module: nn.Module | None = None) -> None:
        params = self.params if module is None else [p for p in module.parameters()]
        for s, p in zip(self.shadow_params, params, strict=False):
            p.copy_(s.to(p.dtype))

    def state_dict(self) -> dict:
        """Full (unsharded) shadows; with FSDP2 every rank must call this (it gathers)."""
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow_params": [_full(s).clone().cpu() for s in self.shadow_params],
        }

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow_params"]
        if len(shadow) != len(self.shadow_params):
            raise ValueError(
                f"mdfast: EMA state has {len(shadow)} params, model has {len(self.shadow_params)}"
            )
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for s, v in zip(self.shadow_params, shadow, strict=True):
            if hasattr(s, "device_mesh"):  # FSDP2 DTensor shard
                from torch.distributed.tensor import distribute_tensor

                v = distribute_tensor(v.to(s.device), s.device_mesh, s.placements)
                s.copy_(v)
            else:
                s.copy_(v)
