"""The samplers ``mdfast sample`` runs for the text objectives mdfast ships (registered by
:mod:`mdfast.experiments.builtin`):

* ``mdlm``: ``ddpm``, ``ddpm_cache``, ``first_hitting``, ReMDM ``remdm-{cap,rescale,conf,loop}``,
  the forward-backward (``remdm-fb``) and DFM (``remdm-dfm``) correctors, semi-AR windows;
* ``sedd``: ``analytic``, ``ddpm``, ``ddpm_cache`` and the ReMDM family, time-conditioned through
  its sigma(t);
* ``ar``: ``ar``, ancestral with temperature / top-k / top-p and a KV cache;
* ``imdm`` (and the ``sdtt`` / ``redi`` students): :func:`mdfast.sampling.imdm`, IMDM's
  three-way posterior with the ε seeded per sample; ``sample.duplicate`` > 1 gives sample g the
  ε seed of group g mod (num_samples / duplicate) (IMDM's total correlation), ``sample.eps_seed``
  ≥ 0 one ε seed for all. An MDLM checkpoint runs it too (the same chain without ε), and an
  MDLM-based ``sdtt`` / ``redi`` student also takes the ``mdlm`` samplers.

Prefix and infix conditioning: fixed positions are written into the initial sequence and never
remasked; AR takes a prefix only.
"""

from __future__ import annotations

import torch

from mdfast import sampling
from mdfast.experiments.generation import SamplerEntry
from mdfast.experiments.registry import ConfigError

__all__ = ["ENTRIES"]

_REMDM = tuple(f"remdm-{s}" for s in ("cap", "rescale", "conf", "loop", "fb", "dfm"))


class _SigmaTime:
    """Adapts a sigma-conditioned backbone (SEDD's DiT, a time-conditioned MDLM) to the
    samplers' time argument."""

    def __init__(self, model, schedule):
        self.model, self.schedule = model, schedule

    def hidden(self, x, t):
        return self.model.trunk(x, self.schedule.sigma(t.float())[0])

    def head(self, h):
        return self.model.head(h)


def _prefix(given: torch.Tensor | None, option_hint: str = "sample.infix"):
    """The fixed leading tokens of ``given`` ([b, P]) or None (for AR, which conditions on a
    prefix only)."""
    if given is None:
        return None
    fixed = given >= 0
    P = int(fixed.all(0).int().cumprod(0).sum())
    if bool(fixed[:, P:].any()):
        raise ConfigError(
            f"mdfast: {option_hint}: this sampler conditions on a prefix only (fixed tokens after "
            "the first free position)"
        )
    return given[:, :P] if P else None


def _masked_options(job, sampler: str, indices: list[int]) -> dict:
    sp = job.sp
    opts = {"batch_size": len(indices), "length": job.length, "steps": sp["steps"],
            "mask_index": job.cfg["objective"]["mask_index"], "temperature": sp["temperature"],
            "top_p": sp["top_p"], "top_k": sp["top_k"], "nucleus": sp["nucleus"],
            "noise_removal": sp["noise_removal"], "device": job.device}  # fmt: skip
    # every sample on its own keyed stream (mdfast.rng.SampleCursor): batch-size independent
    opts["seed"], opts["sample_index"] = sp["seed"], list(indices)
    if sp["schedule"]:
        opts["schedule"] = sp["schedule"]
    if sampler.startswith("remdm-"):
        opts.update({k: sp[k] for k in ("t_on", "t_off", "alpha_on")})
        if sp["eta"] >= 0:
            opts["eta"] = sp["eta"]
    return opts


def _run_masked(job, sampler: str, given, indices):
    """MDLM / SEDD: :func:`mdfast.sampling.sample` (or :func:`~mdfast.sampling.semi_ar`)."""
    sp, model = job.sp, job.model
    opts = _masked_options(job, sampler, indices)
    timed = bool(job.cfg["model"].get("time_conditioning"))
    if timed:
        if sampler == "first_hitting":
            raise ConfigError(
                "mdfast: sample.sampler='first_hitting' needs a denoiser without time "
                "conditioning (this model is time-conditioned)"
            )
        model = _SigmaTime(model, job.objective.schedule)
        opts["time_conditioned"] = True
    prefix = None  # the samplers' template: token ids, -1 where free (up to the last fixed)
    if given is not None:
        last = int((given >= 0).any(0).nonzero().max()) + 1
        prefix = given[:, :last]
    try:
        if sp["semi_ar"]:
            if prefix is not None:
                raise ConfigError("mdfast: sample.semi_ar does not take conditioning tokens")
            return sampling.semi_ar(model, sampler=sampler, stride_length=sp["stride_length"],
                                    num_strides=sp["num_strides"], **opts)  # fmt: skip
        return sampling.sample(model, sampler=sampler, prefix=prefix, **opts)
    except ValueError as e:
        if isinstance(e, ConfigError) or "argument '" not in str(e):
            raise
        raise ConfigError(str(e).replace("argument '", "option 'sample.")) from None


def _run_ar(job, sampler: str, given, indices):
    sp = job.sp
    try:
        return sampling.ar_sample(
            job.model, batch_size=len(indices), length=job.length, seed=sp["seed"],
            prefix=_prefix(given, "sample.prompt"), bos_index=job.bos_id if job.bos_id is not None
            else 0, temperature=sp["temperature"], top_p=sp["top_p"], top_k=sp["top_k"],
            nucleus=sp["nucleus"], exclude_index=job.cfg["objective"].get("exclude_index", -1),
            kv_cache=sp["kv_cache"], sample_index=list(indices), device=job.device,
        )  # fmt: skip
    except ValueError as e:
        if isinstance(e, ConfigError) or "argument '" not in str(e):
            raise
        raise ConfigError(str(e).replace("argument '", "option 'sample.")) from None


def _eps_seeds(job, indices) -> torch.Tensor:
    """The ε seed of each sample: ``sample.eps_seed`` for all, or the default keyed seed of its
    duplicate group g mod (num_samples / duplicate)."""
    sp = job.sp
    if sp["eps_seed"] >= 0:
        if sp["eps_seed"] >= 2**31:
            raise ConfigError(f"mdfast: sample.eps_seed must be in [0, 2^31) or -1, got "
                              f"{sp['eps_seed']}")  # fmt: skip
        return torch.full((len(indices),), sp["eps_seed"], dtype=torch.int64)
    total = sp["num_samples"] or sp["batch_size"] * max(1, sp["num_batches"])
    dup = sp["duplicate"]
    if dup < 1 or total % dup:
        raise ConfigError(
            f"mdfast: sample.duplicate={dup} must be >= 1 and divide the number of samples "
            f"({total})"
        )
    groups = torch.as_tensor(indices, dtype=torch.int64) % (total // dup)
    return sampling.default_eps_seeds(sp["seed"], groups)


def _run_imdm(job, sampler: str, given, indices):
    """:func:`mdfast.sampling.imdm` with the settings of :func:`_masked_options`."""
    sp = job.sp
    if sp["semi_ar"]:
        raise ConfigError("mdfast: sample.semi_ar is not available with sample.sampler=imdm")
    opts = _masked_options(job, sampler, indices)
    if given is not None:
        last = int((given >= 0).any(0).nonzero().max()) + 1
        opts["prefix"] = given[:, :last]
    try:
        return sampling.imdm(job.model, fix_eps=sp["fix_eps"], mdlm_posterior=sp["mdlm_posterior"],
                             eps_seeds=_eps_seeds(job, indices).to(job.device),
                             **opts)  # fmt: skip
    except ValueError as e:
        if isinstance(e, ConfigError) or "argument '" not in str(e):
            raise
        raise ConfigError(str(e).replace("argument '", "option 'sample.")) from None


def _run_mdlm_family(job, sampler: str, given, indices):
    """MDLM, SDTT and ReDi students: IMDM's sampler, or (no ε branch) the MDLM samplers."""
    if sampler == "imdm":
        return _run_imdm(job, sampler, given, indices)
    if hasattr(job.model, "eps_from_seeds"):
        raise ConfigError(
            f"mdfast: an IMDM model samples with sample.sampler=imdm, got '{sampler}'"
        )
    return _run_masked(job, sampler, given, indices)


_MDLM = ("ddpm_cache", "ddpm", "first_hitting", *_REMDM)

ENTRIES = {
    "mdlm": SamplerEntry((*_MDLM, "imdm"), "ddpm_cache", _run_mdlm_family),
    "sedd": SamplerEntry(("analytic", "ddpm", "ddpm_cache", *_REMDM), "analytic", _run_masked),
    "ar": SamplerEntry(("ar",), "ar", _run_ar, conditioning="prefix"),
    "imdm": SamplerEntry(("imdm",), "imdm", _run_imdm),
    "sdtt": SamplerEntry(("imdm", *_MDLM), "imdm", _run_mdlm_family),
    "redi": SamplerEntry(("imdm", *_MDLM), "imdm", _run_mdlm_family),
}  # fmt: skip
