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

Noise: position i's draw is step i of each sample's keyed stream (``sample_index``, default
0..B-1; :class:`mdfast.rng.SampleCursor`), so a sample does not depend on the batch it was drawn
in.
"""

from __future__ import annotations

import torch

from mdfast.sampling.chain import SampleResult, _cursor, sample_x0_rows
from mdfast.sampling.settings import COMMON_OPTIONS, SamplerSettings

__all__ = ["ar_sample"]

# an AR model has no mask and no time grid: settings' mask_index / steps / schedule are not read
AR_OPTIONS = tuple(o for o in COMMON_OPTIONS if o not in ("mask_index", "steps", "schedule", "eps",
                                                          "noise_removal"))  # fmt: skip


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
    settings: SamplerSettings | None = None,
    /,
    *,
    bos_index: int | None = None,
    exclude_index: int = -1,
    kv_cache: bool = True,
    **options,
) -> SampleResult:
    """Samples [B, length] of a causal ``model`` (``model(x) -> logits [B, n, V]``; with
    ``kv_cache`` also ``model(x_new, cache=c)`` and ``model.new_cache(capacity)``, as the causal
    :class:`mdfast.models.DiT`). Reads ``batch_size``, ``length``, ``seed``, ``prefix``,
    ``temperature``, ``top_p``, ``top_k``, ``nucleus``, ``sample_index``, ``device`` of the
    settings; ``exclude_index``: a class never drawn (-1: none). ``nfe`` counts model calls (the
    prefix pass included)."""
    st = SamplerSettings.build(settings, options, sampler="ar_sample", allowed=AR_OPTIONS,
                               steps=1, mask_index=0)  # fmt: skip
    B, L = st.batch_size, st.length
    x = torch.empty((B, L), dtype=torch.int64, device=st.device)
    pre = _prefix(st.prefix, bos_index, B, L, x.device)
    P = pre.shape[1]
    x[:, :P] = pre
    if st.sample_index is None:
        st = st.replace(sample_index=torch.arange(B))
    rng = _cursor(st)
    rows = torch.arange(B, device=x.device) * L
    cache = model.new_cache(L) if kv_cache else None
    nfe = 0
    for i in range(P, L):
        if cache is None:
            logits = model(x[:, :i])[:, -1]
        elif i == P:
            logits = model(x[:, :P], cache=cache)[:, -1]
        else:
            logits = model(x[:, i - 1 : i], cache=cache)[:, -1]
        nfe += 1
        x[:, i], _ = sample_x0_rows(logits.float(), rows, L, st, rng, key=rng.at(i),
                                exclude=exclude_index)  # fmt: skip
    return SampleResult(x, nfe, L - P, nfe * B)
