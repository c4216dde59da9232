"""Samplers of masked diffusion models (MDLM, ReMDM, SEDD-absorbing) built on the fused ops.

Every sampler takes a denoiser ``model`` — ``model(x) -> logits [B, L, V]`` (``model(x, t)``
with ``time_conditioned=True``), or an object with ``hidden(x) -> h [B, L, D]`` and
``head(h_rows [R, D]) -> logits [R, V]`` so that logits are computed only for the rows that
change — and returns a :class:`SampleResult` with the samples, the number of denoiser calls and
of steps taken. The same ``seed`` gives the same samples: all randomness comes from the Philox
streams of :func:`mdfast.ops.mask_step`, :func:`mdfast.ops.sample_x0` and
:func:`mdfast.ops.uniform`, one offset per op call from a :class:`mdfast.rng.PhiloxStream` of
``seed`` — or, with ``sample_index`` (global indices of the batch's samples in a larger job),
one keyed stream per sample (:class:`mdfast.rng.SampleCursor`), so that sample g does not
depend on the batch it runs in. ``schedule`` is a name of :func:`mdfast.schedules.get_schedule`
or a schedule object.

Time runs on MDLM's grid t_k = linspace(1, eps, T + 1); a step goes t = t_k -> s = t_{k+1}.

* :func:`ddpm` — ancestral sampling, one denoiser call per step (log-linear alpha by default).
* :func:`ddpm_cache` — the same chain, reusing the denoiser output while x is unchanged (valid
  because the MDLM denoisers are not time-conditioned); ``schedule="linear"`` (default) is MDLM's
  cache variant alpha_t = 1 - t, ``"loglinear"`` the ddpm one. A cached step costs O(B L) plus the
  rows that unmask.
* :func:`first_hitting` — the same chain as :func:`ddpm_cache` on the same grid, jumping from one
  change event to the next. In the ddpm chain a masked position decides independently at every
  step whether it unmasks (probability (alpha_s - alpha_t)/(1 - alpha_t), which does not depend
  on the tokens), so it survives to grid time t_j with probability
  (1 - alpha_{t_j}) / (1 - alpha_{t_0}) (the step probabilities telescope) and its unmask step
  is the first j with 1 - alpha_{t_j} < u (1 - alpha_{t_0}), u ~ U(0, 1) (inverse survival
  function), independently of the other positions. All unmask steps are drawn up front; at each
  distinct step the denoiser runs once, on the sequences that have an event then, and the firing
  positions draw their tokens from it — exactly the ddpm chain's law (tested against the exact
  chain law). Denoiser calls = number of distinct event steps.
* :func:`analytic` — SEDD's absorbing-state analytic (tau-leaping) sampler. For the absorbing
  graph its staggered-score posterior reduces exactly to unmask with probability
  (e^{dsigma} - 1)/(e^{sigma_t} - 1) = (alpha_s - alpha_t)/(1 - alpha_t) with the token from
  p_theta, so it runs the ddpm step with a time-conditioned call every step; its last step is
  SEDD's denoiser step (every masked position *samples* its token).
* :func:`remdm` — ReMDM remasking (cap, rescale, conf, loop), the forward-backward corrector
  (``"fb"``) and the DFM corrector (``"dfm"``) on MDLM's cached chain with alpha_t = 1 - t.
* :func:`ar_sample` — ancestral sampling of a causal (AR) model, KV-cached, each sample on its
  own keyed stream (:class:`mdfast.rng.SampleCursor`).
* :func:`semi_ar` — semi-autoregressive generation; ``prefix=`` conditions any sampler on fixed
  leading tokens (carry-over keeps them; remasking never touches them).
* :func:`euler` and :func:`maskgit` (:mod:`mdfast.sampling.interpolant`) — the discrete-interpolant
  samplers (time 0 = mask, 1 = data) over token grids, with classifier-free guidance in one
  batched forward (:mod:`mdfast.sampling.guidance`); options in :class:`InterpolantSettings`.
* :func:`sample` — any of them by name (``"ddpm_cache"``, ``"remdm-conf"``, ``"euler"``, ...).

Options: every sampler takes a :class:`SamplerSettings` (validated once, errors name the option)
or the same options as keywords. alpha(t) comes from :func:`mdfast.schedules.alpha_at`, the ReMDM
rates from :mod:`mdfast.sampling.remask_rates`.

Set ``MDFAST_NVTX=1`` to wrap the phases in NVTX ranges (``denoise``, ``cache.reuse``,
``sample``, ``remask``) for Nsight Systems.
"""

from __future__ import annotations

from mdfast.sampling import remask_rates
from mdfast.sampling.ancestral import analytic, ddpm, ddpm_cache, first_hitting
from mdfast.sampling.ar import ar_sample
from mdfast.sampling.chain import SampleResult, grid_plan
from mdfast.sampling.dispatch import sample, sampler_names
from mdfast.sampling.guidance import guided_logits
from mdfast.sampling.interpolant import InterpolantSettings, euler, maskgit
from mdfast.sampling.remdm import remdm, remdm_plan
from mdfast.sampling.semi_ar import semi_ar
from mdfast.sampling.settings import LOOP_DEFAULTS, REMDM_DEFAULTS, SamplerSettings

__all__ = [
    "LOOP_DEFAULTS",
    "REMDM_DEFAULTS",
    "InterpolantSettings",
    "SampleResult",
    "SamplerSettings",
    "analytic",
    "ar_sample",
    "ddpm",
    "ddpm_cache",
    "euler",
    "first_hitting",
    "grid_plan",
    "guided_logits",
    "maskgit",
    "remask_rates",
    "remdm",
    "remdm_plan",
    "sample",
    "sampler_names",
    "semi_ar",
]


def __getattr__(name: str):
    if name == "schedules":  # the deprecated alias module, imported (and warning) on first use
        import importlib

        return importlib.import_module("mdfast.sampling.schedules")
    raise AttributeError(f"module 'mdfast.sampling' has no attribute {name!r}")
