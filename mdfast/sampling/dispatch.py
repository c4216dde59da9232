"""Samplers by name, as ReMDM's ``sampling.sampler``: ``ddpm``, ``ddpm_cache``,
``first_hitting``, ``analytic`` and ``remdm-<strategy>`` (cap, rescale, conf, loop, fb, dfm)."""

from __future__ import annotations

from mdfast.sampling.ancestral import analytic, ddpm, ddpm_cache, first_hitting
from mdfast.sampling.chain import SampleResult
from mdfast.sampling.remdm import remdm
from mdfast.sampling.settings import REMDM_STRATEGIES, SamplerSettings

__all__ = ["SAMPLERS", "sample", "sampler_names"]

SAMPLERS = {
    "ddpm": ddpm,
    "ddpm_cache": ddpm_cache,
    "first_hitting": first_hitting,
    "analytic": analytic,
}


def sampler_names() -> list[str]:
    """Every name :func:`sample` accepts."""
    return [*SAMPLERS, *(f"remdm-{s}" for s in REMDM_STRATEGIES)]


def sample(
    model, settings: SamplerSettings | None = None, /, *, sampler: str = "ddpm_cache", **options
) -> SampleResult:
    """Run the sampler named ``sampler`` with ``settings`` and/or keyword options (see
    :class:`~mdfast.sampling.settings.SamplerSettings`); ``remdm-<strategy>`` sets the ReMDM
    strategy."""
    if sampler.startswith("remdm-") and sampler[len("remdm-") :] in REMDM_STRATEGIES:
        return remdm(model, settings, strategy=sampler[len("remdm-") :], **options)
    if sampler not in SAMPLERS:
        raise ValueError(
            f"mdfast: argument 'sampler' must be one of {sampler_names()}, got {sampler!r}"
        )
    return SAMPLERS[sampler](model, settings, **options)
