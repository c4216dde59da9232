"""Dropout whose mask is keyed noise, so a run on N processes equals the run on one.

With an active :class:`mdfast.rng.NoiseKey` (the trainer sets one per micro-batch), sample g's
mask at global step s is drawn from the stream (seed, ``Purpose.DROPOUT``, layer name) at offset
``(s << 32) | g``: element j of the sample is kept iff u_j >= p (u_j a 24-bit uniform, so
P(keep) = 1 - p up to 2^-24) and scaled by 1 / (1 - p), exactly torch's inverted dropout. The
mask of a sample does not depend on which other samples share its batch, process or
micro-batch. Without a key it is ``torch.nn.functional.dropout``.

Each :class:`KeyedDropout` needs a stream name unique within its model:
:func:`name_dropout_streams` gives every one its qualified module name (the models call it at the
end of their constructor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mdfast.rng import Purpose, current_noise_key

__all__ = ["KeyedDropout", "name_dropout_streams"]


class KeyedDropout(nn.Module):
    """``nn.Dropout(p)`` drawing its mask from the active noise key (see the module docstring).
    The input's first dimension must be the key's samples."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"mdfast: argument 'p' must be in [0, 1), got {p}")
        self.p = float(p)
        self.stream: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return _dropout(x, self.p, self.stream)

    def extra_repr(self) -> str:
        return f"p={self.p}, stream={self.stream!r}"


@torch.compiler.disable  # the key is data: a graph break, not a recompile per step
def _dropout(x: torch.Tensor, p: float, stream: str | None) -> torch.Tensor:
    key = current_noise_key()
    if key is None:
        return F.dropout(x, p, training=True)
    if stream is None:
        raise RuntimeError(
            "mdfast: this KeyedDropout has no stream name; call "
            "mdfast.models.dropout.name_dropout_streams(model) after building the model"
        )
    if x.shape[0] != len(key):
        raise ValueError(
            f"mdfast: keyed dropout '{stream}' got a batch of {x.shape[0]} but the active "
            f"NoiseKey holds {len(key)} samples"
        )
    u = key.uniform(Purpose.DROPOUT, x.shape[1:], stream, dtype=torch.float32, device=x.device)
    return torch.where(u >= p, x * (1.0 / (1.0 - p)), 0.0)


def name_dropout_streams(model: nn.Module) -> nn.Module:
    """Name every :class:`KeyedDropout` in ``model`` by its qualified module name (its stream id);
    returns ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, KeyedDropout):
            module.stream = name
    return model
