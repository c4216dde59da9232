"""Per-sample keyed draws: sample g of a job draws its noise from its own Philox stream.

The fused ops key their noise by (seed, offset, row of the call): a sample's tokens would depend on
its row in the batch and so on the batch size and the number of processes. Here sample g's
draws come from the stream ``sample_seed(seed, g)`` (63 bits of BLAKE2b of (seed, g)), with the
op-call offset of the step, and each op call covers that sample's rows only. The same seed gives
the same sample g whatever the batch size, the rank count or the device (the Philox stream is
bit-identical on CPU and CUDA; the denoiser's own float rounding may still differ by device).
"""

from __future__ import annotations

import functools
import hashlib

import torch

from mdfast import ops

__all__ = ["mask_step_rows", "sample_rows", "sample_seed", "sample_seeds"]


@functools.lru_cache(maxsize=65536)
def sample_seed(seed: int, index: int) -> int:
    """The Philox seed of global sample ``index`` of a job seeded ``seed``."""
    text = repr(("mdfast.sample", int(seed), int(index))).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def sample_seeds(seed: int, indices) -> list[int]:
    """``sample_seed(seed, g)`` for every g of ``indices`` (a list or an int64 tensor)."""
    if torch.is_tensor(indices):
        indices = indices.tolist()
    return [sample_seed(seed, g) for g in indices]


def sample_rows(logits: torch.Tensor, owner: torch.Tensor, seeds: list[int], offset: int, **kw):
    """:func:`mdfast.ops.sample_x0` of logits rows [R, V] where row r belongs to batch row
    ``owner[r]`` (non-decreasing): each sample's rows are drawn in one call on its own stream
    (``seeds[b]``, ``offset``), row k of that call being its k-th row here. Returns (token [R],
    prob [R])."""
    tokens = torch.empty(logits.shape[0], dtype=torch.int64, device=logits.device)
    probs = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    if logits.shape[0] == 0:
        return tokens, probs
    b_ids, counts = torch.unique_consecutive(owner, return_counts=True)
    start = 0
    for b, n in zip(b_ids.tolist(), counts.tolist(), strict=True):
        tok, prob = ops.sample_x0(
            logits[start : start + n], None, seed=seeds[b], offset=offset, **kw
        )
        tokens[start : start + n], probs[start : start + n] = tok, prob
        start += n
    return tokens, probs


def mask_step_rows(x, logits, seeds: list[int], offset: int, *, remask=None, confidence=None,
                   **kw):  # fmt: skip
    """:func:`mdfast.ops.mask_step` with batch row b on its own stream (``seeds[b]``,
    ``offset``): one call per row (position l of row b is element l of its call). ``remask``: None,
    a scalar or [B, L]; ``confidence``: None or [B, L]. Returns (x_next, changed, confidence)."""
    outs = []
    for b, seed in enumerate(seeds):
        r = remask[b : b + 1] if torch.is_tensor(remask) and remask.dim() == 2 else remask
        c = None if confidence is None else confidence[b : b + 1]
        z = None if logits is None else logits[b : b + 1]
        outs.append(ops.mask_step(x[b : b + 1], z, remask=r, confidence=c, seed=seed,
                                  offset=offset, **kw))  # fmt: skip
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
