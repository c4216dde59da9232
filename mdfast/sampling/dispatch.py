"""Samplers by name, as ReMDM's ``sampling.sampler``: ``ddpm``, ``ddpm_cache``,
``first_hitting``, ``analytic`` and ``remdm-<strategy>`` (cap, rescale, conf, loop, fb, dfm);
and the discrete-interpolant samplers ``euler`` and ``maskgit`` (options in
:class:`~mdfast.sampling.interpolant.InterpolantSettings`, condition in ``cond=``)."""

from __future__ import annotations

from mdfast.sampling.ancestral import analytic, ddpm, ddpm_cache, first_hitting
from mdfast.sampling.chain import SampleResult
from mdfast.sampling.interpolant import euler, maskgit
from mdfast.sampling.remdm import remdm
from mdfast.sampling.settings import REMDM_STRATEGIES, SamplerSettings

__all__ = ["INTERPOLANT_SAMPLERS", "SAMPLERS", "sample", "sampler_names"]

SAMPLERS = {
    "ddpm": ddpm,
    "ddpm_cache": ddpm_cache,
    "first_hitting": first_hitting,
    "analytic": analytic,
}
INTERPOLANT_SAMPLERS = {"euler": euler, "maskgit": maskgit}


def sampler_names() -> list[str]:
    """Every name :func:`sample` accepts."""
    return [*SAMPLERS, *(f"remdm-{s}" for s in REMDM_STRATEGIES), *INTERPOLANT_SAMPLERS]


def sample(
    model, settings: SamplerSettings | None = None, /, *, sampler: str = "ddpm_cache", **options
) -> SampleResult:
    """Run the sampler named ``sampler`` with ``settings`` and/or keyword options (see
    :class:`~mdfast.sampling.settings.SamplerSettings`); ``remdm-<strategy>`` sets the ReMDM
    strategy. ``euler`` / ``maskgit`` take an InterpolantSettings (or its options) and
    ``cond=``."""
    if sampler.startswith("remdm-") and sampler[len("remdm-") :] in REMDM_STRATEGIES:
        return remdm(model, settings, strategy=sampler[len("remdm-") :], **options)
    if sampler in INTERPOLANT_SAMPLERS:
        return INTERPOLANT_SAMPLERS[sampler](model, settings, **options)
    if sampler not in SAMPLERS:
        raise ValueError(
            f"mdfast: argument 'sampler' must be one of {sampler_names()}, got {sampler!r}"
        )
    return SAMPLERS[sampler](model, settings, **options)
