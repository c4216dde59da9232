"""Semi-autoregressive generation: a window of ``length`` tokens, slid ``num_strides`` times."""

from __future__ import annotations

import torch

from mdfast.rng import Purpose, stream_seed
from mdfast.sampling.chain import SampleResult
from mdfast.sampling.dispatch import sample
from mdfast.sampling.settings import FIELDS, SamplerSettings

__all__ = ["semi_ar"]


def semi_ar(
    model,
    settings: SamplerSettings | None = None,
    /,
    *,
    stride_length: int,
    num_strides: int,
    sampler: str = "ddpm_cache",
    **options,
) -> SampleResult:
    """Semi-autoregressive generation (MDLM ``sample_subs_guidance``): sample a window of
    ``length`` tokens, then ``num_strides`` times slide it by ``stride_length``: the new window's
    first length - stride tokens are the previous window's tail (a fixed prefix), the rest is
    sampled. Output length = length + num_strides * stride_length.

    Window k draws from its own stream, seed ``stream_seed(seed, Purpose.WINDOW, k)``
    (:func:`mdfast.rng.stream_seed`), so no two windows, and no window of another seed, share
    noise."""
    st = SamplerSettings.build(settings, options, sampler="semi_ar", allowed=FIELDS)
    if st.prefix is not None:
        raise ValueError("mdfast: semi_ar sets each window's 'prefix' itself; do not pass one")
    length = st.length
    if isinstance(stride_length, bool) or not isinstance(stride_length, int):
        raise ValueError(f"mdfast: argument 'stride_length' must be an int, got {stride_length!r}")
    if not 0 < stride_length <= length:
        raise ValueError(
            f"mdfast: argument 'stride_length' must be in (0, length], got {stride_length}"
        )
    if isinstance(num_strides, bool) or not isinstance(num_strides, int) or num_strides < 0:
        raise ValueError(f"mdfast: argument 'num_strides' must be an int >= 0, got {num_strides}")

    def window(k: int, prefix) -> SampleResult:
        seed = stream_seed(st.seed, Purpose.WINDOW, k)
        return sample(model, st.replace(seed=seed, prefix=prefix), sampler=sampler)

    res = window(0, None)
    pieces, nfe, steps, seqs, x = [res.x], res.nfe, res.steps, res.sequences, res.x
    for k in range(num_strides):
        r = window(k + 1, x[:, stride_length:])
        pieces.append(r.x[:, length - stride_length :])
        nfe, steps, seqs, x = nfe + r.nfe, steps + r.steps, seqs + r.sequences, r.x
    return SampleResult(torch.cat(pieces, dim=1), nfe, steps, seqs)
