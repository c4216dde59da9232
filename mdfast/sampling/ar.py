"""Ancestral sampling of an autoregressive (causal) language model.

x_i ~ p_theta(. | x_<i) for i = P .. L-1 after a fixed prefix x_<P (a BOS token by default), each
draw by :func:`mdfast.ops.sample_x0` (exact fp64 Gumbel-max) at ``temperature`` with ``top_k``
and ``top_p`` truncation (``nucleus="remdm"``: keep the classes whose cumulative mass is <= p and
always the top-1, as ReMDM's AR sampler; ``"hf"``: also the class crossing p); ``exclude_index``
(the diffusion mask id a shared vocabulary carries) is never drawn.

With ``kv_cache=True`` (default) the model runs once on the prefix and then once per new token
on that token only, reusing every block's keys and values
(:class:`mdfast.models.kv_cache.KVCache`): O(L) work per token instead of O(L^2). The uncached
path re-runs the full causal forward on x_<i for every i; both give the same samples.

Sample g of the job (``sample_index``, default 0..B-1) draws position i's token from its own
stream (:func:`mdfast.sampling.keyed.sample_seed`, offset i), so samples do not depend on the
batch they were drawn in.
"""

from __future__ import annotations

import torch

from mdfast.sampling.chain import SampleResult
from mdfast.sampling.keyed import sample_rows, sample_seeds

__all__ = ["ar_sample"]


def _prefix(prefix, bos_index, batch_size, length, device) -> torch.Tensor:
    if prefix is None:
        if bos_index is None or bos_index < 0:
            raise ValueError("mdfast: AR sampling needs a 'prefix' or a 'bos_index' to start from")
        prefix = torch.tensor([bos_index])
    prefix = torch.as_tensor(prefix, dtype=torch.int64, device=device)
    if prefix.dim() == 1:
        prefix = prefix.expand(batch_size, -1)
    if prefix.dim() != 2 or prefix.shape[0] != batch_size or not 1 <= prefix.shape[1] <= length:
        raise ValueError(
            "mdfast: argument 'prefix' must be [P] or [B, P] with 1 <= P <= length, got "
            f"{list(prefix.shape)}"
        )
    return prefix


def ar_sample(
    model,
    *,
    batch_size: int,
    length: int,
    seed: int = 0,
    prefix=None,
    bos_index: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    nucleus: str = "remdm",
    exclude_index: int = -1,
    kv_cache: bool = True,
    sample_index=None,
    device=None,
) -> SampleResult:
    """Samples [B, length] of a causal ``model`` (``model(x) -> logits [B, n, V]``; with
    ``kv_cache`` also ``model(x_new, cache=c)`` and ``model.new_cache(capacity)``, as the causal
    :class:`mdfast.models.DiT`). ``nfe`` counts model calls (the prefix pass included)."""
    for name, value in (("batch_size", batch_size), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"mdfast: argument '{name}' must be a positive int, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"mdfast: argument 'seed' must be a non-negative int, got {seed!r}")
    x = torch.empty((batch_size, length), dtype=torch.int64, device=device)
    pre = _prefix(prefix, bos_index, batch_size, length, x.device)
    P = pre.shape[1]
    x[:, :P] = pre
    if sample_index is None:
        sample_index = range(batch_size)
    seeds = sample_seeds(seed, sample_index)
    if len(seeds) != batch_size:
        raise ValueError(
            f"mdfast: argument 'sample_index' must hold batch_size={batch_size} indices, "
            f"got {len(seeds)}"
        )
    owner = torch.arange(batch_size, device=x.device)
    draw = {"temperature": temperature, "top_p": top_p, "top_k": top_k,
            "exclude_index": exclude_index, "nucleus": nucleus}  # fmt: skip
    cache = model.new_cache(length) if kv_cache else None
    nfe = 0
    logits = None
    for i in range(P, length):
        if cache is None:
            logits = model(x[:, :i])[:, -1]
        elif i == P:
            logits = model(x[:, :P], cache=cache)[:, -1]
        else:
            logits = model(x[:, i - 1 : i], cache=cache)[:, -1]
        nfe += 1
        tok, _ = sample_rows(logits.float(), owner, seeds, i, **draw)
        x[:, i] = tok
    return SampleResult(x, nfe, length - P, nfe * batch_size)
