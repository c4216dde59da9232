"""Samplers by name (as ReMDM's ``sampling.sampler``) and semi-autoregressive generation."""

from __future__ import annotations

import torch

from mdfast.sampling.ancestral import analytic, ddpm, ddpm_cache, first_hitting
from mdfast.sampling.chain import SampleResult
from mdfast.sampling.imdm import imdm
from mdfast.sampling.remdm import remdm

_SAMPLERS = {
    "ddpm": ddpm,
    "ddpm_cache": ddpm_cache,
    "first_hitting": first_hitting,
    "analytic": analytic,
    "imdm": imdm,
}


def sample(model, *, sampler: str = "ddpm_cache", **kwargs) -> SampleResult:
    """Dispatch by name: ``ddpm``, ``ddpm_cache``, ``first_hitting``, ``analytic``, ``imdm``, or
    ``remdm-<strategy>`` (cap, rescale, conf, loop, fb, dfm) as in ReMDM's ``sampling.sampler``."""
    if sampler.startswith("remdm-"):
        return remdm(model, strategy=sampler[len("remdm-") :], **kwargs)
    if sampler not in _SAMPLERS:
        raise ValueError(f"mdfast: argument 'sampler' unknown: {sampler!r}")
    return _SAMPLERS[sampler](model, **kwargs)


def semi_ar(
    model,
    *,
    batch_size: int,
    length: int,
    mask_index: int,
    stride_length: int,
    num_strides: int,
    sampler: str = "ddpm_cache",
    seed: int = 0,
    **kwargs,
) -> SampleResult:
    """Semi-autoregressive generation (MDLM ``sample_subs_guidance``): sample a window of
    ``length`` tokens, then ``num_strides`` times slide it by ``stride_length``: the new window's
    first length - stride tokens are the previous window's tail (a fixed prefix), the rest is
    sampled. Output length = length + num_strides * stride_length. Each window uses its own seed
    (seed + window index)."""
    if not 0 < stride_length <= length:
        raise ValueError(
            f"mdfast: argument 'stride_length' must be in (0, length], got {stride_length}"
        )
    res = sample(
        model,
        sampler=sampler,
        batch_size=batch_size,
        length=length,
        mask_index=mask_index,
        seed=seed,
        **kwargs,
    )
    pieces, nfe, steps, seqs, x = [res.x], res.nfe, res.steps, res.sequences, res.x
    for k in range(num_strides):
        r = sample(
            model,
            sampler=sampler,
            batch_size=batch_size,
            length=length,
            mask_index=mask_index,
            seed=seed + k + 1,
            prefix=x[:, stride_length:],
            **kwargs,
        )
        pieces.append(r.x[:, length - stride_length :])
        nfe, steps, seqs, x = nfe + r.nfe, steps + r.steps, seqs + r.sequences, r.x
    return SampleResult(torch.cat(pieces, dim=1), nfe, steps, seqs)
