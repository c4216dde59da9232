"""Deterministic, resumable batching.

The stream of global batches is a pure function of ``(seed, position)``: epoch ``e`` visits the
dataset in the order ``randperm(n)`` of a generator seeded ``seed·1000003 + e``, and step ``s``
takes global samples ``[s·B, (s+1)·B)`` of that concatenated stream. Rank ``r`` of ``W`` takes the
``r``-th slice of ``B/W`` samples and splits it into ``grad_accum`` micro-batches. So one process
and ``W`` processes with the same global batch see the same samples, and resuming at step ``s``
needs only ``s`` (the "data position" stored in checkpoints).
:meth:`StepBatches.batch_positions` gives a micro-batch's positions in its global batch, which
key the samples' noise.
"""

from __future__ import annotations

import torch

__all__ = ["StepBatches", "collate"]


def collate(dataset, idx: torch.Tensor):
    """Rows ``idx`` of a tensor, a dict/tuple of tensors, or a map-style dataset (one
    ``__getitems__(idx)`` call when it has one, PyTorch's batched-fetch protocol)."""
    if isinstance(dataset, torch.Tensor):
        return dataset[idx]
    if isinstance(dataset, dict):
        return {k: v[idx] for k, v in dataset.items()}
    if isinstance(dataset, (tuple, list)) and dataset and isinstance(dataset[0], torch.Tensor):
        return type(dataset)(v[idx] for v in dataset)
    if hasattr(dataset, "__getitems__"):
        return dataset.__getitems__(idx)
    from torch.utils.data import default_collate

    return default_collate([dataset[int(i)] for i in idx])


def _length(dataset) -> int:
    if isinstance(dataset, dict):
        return len(next(iter(dataset.values())))
    if isinstance(dataset, (tuple, list)) and dataset and isinstance(dataset[0], torch.Tensor):
        return len(dataset[0])
    return len(dataset)


class StepBatches:
    def __init__(
        self,
        dataset,
        global_batch: int,
        grad_accum: int = 1,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if global_batch % (world * grad_accum):
            raise ValueError(
                f"mdfast: 'batch_size' ({global_batch}) must be divisible by world size × "
                f"grad_accum ({world} × {grad_accum})"
            )
        self.dataset = dataset
        self.n = _length(dataset)
        if self.n == 0:
            raise ValueError("mdfast: the training dataset is empty")
        self.global_batch = global_batch
        self.grad_accum = grad_accum
        self.rank, self.world = rank, world
        self.micro = global_batch // (world * grad_accum)
        self.seed = seed
        self.shuffle = shuffle
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perms[epoch] = torch.randperm(self.n, generator=g)
            else:
                self._perms[epoch] = torch.arange(self.n)
        return self._perms[epoch]

    def batch_positions(self, step: int, micro: int) -> torch.Tensor:
        """int64[micro]: where this rank's micro-batch ``micro`` sits in the step's global batch
        (indices in [0, global_batch)); the same sample has the same position on any number of
        ranks and micro-batches, which keys its noise (:class:`mdfast.rng.NoiseKey`)."""
        start = self.rank * (self.global_batch // self.world) + micro * self.micro
        return torch.arange(start, start + self.micro)

    def indices(self, step: int, micro: int) -> torch.Tensor:
        """Dataset rows of this rank's micro-batch ``micro`` of global step ``step``."""
        pos = step * self.global_batch + self.batch_positions(step, micro)
        epochs, offs = pos // self.n, pos % self.n
        out = torch.empty_like(pos)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._perm(e)[offs[sel]]
        return out

    def get(self, step: int, micro: int):
        return collate(self.dataset, self.indices(step, micro))

    def position(self, step: int) -> int:
        return step * self.global_batch
