"""Key/value cache for incremental decoding with a causal transformer.

A causal DiT's output at position i depends only on positions <= i, and a block's keys and values
at position j depend only on the block input at j. Decoding one new token at position n therefore
needs, per block, the keys/values of positions 0..n-1 (cached) and the new token's query, key and
value: attention of the new rows over [cache ; new] with the causal rule j <= n + i reproduces the
full causal forward exactly (up to float summation order), at O(n) instead of O(n^2) per step.

Keys are cached after the rotary embedding (rotary depends only on the absolute position, which
the cache tracks in :attr:`KVCache.length`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["KVCache", "LayerKV"]


class LayerKV:
    """One block's keys and values, [B, H, capacity, Dh] each, filled up to ``length``."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: [B, n, H, Dh] of the n new positions (rotary applied). Appends k, v and
        returns softmax(q K^T / sqrt(Dh)) V over the cached and new positions, causal within the
        new ones: [B, n, H * Dh]."""
        b, n, h, d = q.shape
        start = self.length
        if start + n > self.capacity:
            raise ValueError(
                f"mdfast: KV cache holds {self.capacity} positions; {start} cached + {n} new "
                "exceed it"
            )
        if self.k is None:
            self.k = k.new_empty((b, h, self.capacity, d))
            self.v = v.new_empty((b, h, self.capacity, d))
        self.k[:, :, start : start + n] = k.transpose(1, 2).to(self.k.dtype)
        self.v[:, :, start : start + n] = v.transpose(1, 2).to(self.v.dtype)
        self.length = start + n
        keys, values = self.k[:, :, : self.length], self.v[:, :, : self.length]
        qh = q.transpose(1, 2).to(keys.dtype)
        if n == 1:  # one new row sees every cached position
            out = F.scaled_dot_product_attention(qh, keys, values)
        elif start == 0:
            out = F.scaled_dot_product_attention(qh, keys, values, is_causal=True)
        else:  # row i (absolute position start + i) sees positions <= start + i
            rows = torch.arange(n, device=q.device)[:, None] + start
            allowed = torch.arange(self.length, device=q.device)[None, :] <= rows
            out = F.scaled_dot_product_attention(qh, keys, values, attn_mask=allowed)
        return out.transpose(1, 2).reshape(b, n, h * d)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch rows ``rows`` (e.g. the sequences still being decoded)."""
        if self.k is not None:
            self.k, self.v = self.k[rows], self.v[rows]


class KVCache:
    """The caches of every block of a causal model plus the number of positions already
    processed (:attr:`length`: the absolute position of the next token). Made by
    :meth:`mdfast.models.DiT.new_cache`; passed to :meth:`~mdfast.models.DiT.trunk` /
    ``forward(x_new, cache=...)`` with the new tokens only."""

    def __init__(self, n_layers: int, capacity: int):
        if capacity < 1:
            raise ValueError(f"mdfast: KV cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.layers = [LayerKV(capacity) for _ in range(n_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def select(self, rows: torch.Tensor) -> None:
        for layer in self.layers:
            layer.select(rows)
