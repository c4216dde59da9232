"""The samplers ``mdfast sample`` runs for the text objectives mdfast ships (registered by
:mod:`mdfast.experiments.builtin`):

* ``mdlm``: ``ddpm``, ``ddpm_cache``, ``first_hitting``, ReMDM ``remdm-{cap,rescale,conf,loop}``,
  the forward-backward (``remdm-fb``) and DFM (``remdm-dfm``) correctors, semi-AR windows;
* ``sedd``: ``analytic``, ``ddpm``, ``ddpm_cache`` and the ReMDM family, time-conditioned through
  its sigma(t);
* ``ar``: ``ar``, ancestral with temperature / top-k / top-p and a KV cache;
* ``imdm``: ``imdm``, the ε-carrying ancestral step (:func:`imdm_ancestral`).

Prefix and infix conditioning: fixed positions are written into the initial sequence and never
remasked; AR takes a prefix only.
"""

from __future__ import annotations

import torch

from mdfast import sampling
from mdfast.experiments.generation import SamplerEntry
from mdfast.experiments.registry import ConfigError
from mdfast.rng import SampleCursor
from mdfast.sampling.chain import sample_x0_rows
from mdfast.sampling.settings import SamplerSettings

__all__ = ["ENTRIES", "imdm_ancestral"]

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


@torch.no_grad()
def imdm_ancestral(
    backbone,
    *,
    length: int,
    mask_index: int,
    steps: int,
    seed: int,
    sample_index,
    given=None,
    schedule: str = "loglinear",
    eps: float = 1e-5,
    noise_removal: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    nucleus: str = "remdm",
    device=None,
) -> sampling.SampleResult:
    """IMDM's ancestral sampler (``IMDM.generate_samples``): masked positions carry a noise
    vector eps in [-1, 1]^D x scale; at each step t -> s of linspace(1, eps, T + 1) a masked
    position unmasks with (alpha_s - alpha_t)/(1 - alpha_t) (token from p_theta(.|x_t, eps)),
    stays masked keeping eps with (alpha_t/alpha_s - alpha_t)/(1 - alpha_t), or stays masked
    with a fresh eps with (1 - alpha_t/alpha_s)(1 - alpha_s)/(1 - alpha_t)
    (:func:`mdfast.diffusion.imdm.imdm_posterior`); the denoiser output is reused while neither
    x nor eps changed; the still-masked positions take the argmax at the end. Sample g's
    uniforms, eps and token draws come from its keyed stream (:class:`mdfast.rng.SampleCursor`:
    step 0 the initial eps, then per step k the events, the tokens and the fresh eps)."""
    from mdfast.diffusion.imdm import imdm_posterior
    from mdfast.schedules import get_schedule

    B, L, D = len(sample_index), length, backbone.noise_dim
    st = SamplerSettings(batch_size=B, length=L, mask_index=mask_index, steps=steps, seed=seed,
                         eps=eps, temperature=temperature, top_p=top_p, top_k=top_k,
                         nucleus=nucleus, sample_index=sample_index)  # fmt: skip
    cursor = SampleCursor(seed, st.sample_index)
    x = torch.full((B, L), mask_index, dtype=torch.int64, device=device)
    if given is not None:
        x = torch.where(given >= 0, given.to(x.device), x)
    sched = get_schedule(schedule)

    def fresh_eps() -> torch.Tensor:  # one cursor step, drawn or not, so offsets stay keyed
        key = cursor.next()
        return lambda: (2 * key.uniform(cursor.purpose, (L, D), dtype=torch.float32,
                                        device=x.device) - 1) * backbone.noise_scale  # fmt: skip

    e = fresh_eps()()
    ts = torch.linspace(1.0, eps, steps + 1, dtype=torch.float64)
    hidden, nfe = None, 0
    for k in range(steps):
        t, s = ts[k], ts[k + 1]
        a_t, a_s = (float(sched.alpha(v)) for v in (t, s))
        if hidden is None:
            hidden, nfe = backbone.trunk(x, None, e), nfe + 1
        p_unmask, p_keep, _ = (float(p) for p in imdm_posterior(a_t, a_s))
        u = cursor.next().uniform(cursor.purpose, L, device=x.device)
        masked = x == mask_index
        unmask = masked & (u < p_unmask)
        reset = masked & (u >= p_unmask + p_keep)
        rows = unmask.reshape(-1).nonzero()[:, 0]
        logits = backbone.head(hidden.reshape(-1, hidden.shape[-1])[rows])
        x.view(-1)[rows], _ = sample_x0_rows(logits, rows, L, st, cursor)
        redraw = fresh_eps()
        if bool(reset.any()):
            e = torch.where(reset[..., None], redraw(), e)
        if rows.numel() or bool(reset.any()):
            hidden = None
    if noise_removal and bool((x == mask_index).any()):
        if hidden is None:
            hidden, nfe = backbone.trunk(x, None, e), nfe + 1
        rows = (x == mask_index).reshape(-1).nonzero()[:, 0]
        logits = backbone.head(hidden.reshape(-1, hidden.shape[-1])[rows])
        x.view(-1)[rows], _ = sample_x0_rows(logits, rows, L, st, cursor, temperature=0.0)
    return sampling.SampleResult(x, nfe, steps, nfe * B)


def _run_imdm(job, sampler: str, given, indices):
    sp = job.sp
    return imdm_ancestral(
        job.model, length=job.length, mask_index=job.cfg["objective"]["mask_index"],
        steps=sp["steps"], seed=sp["seed"], sample_index=indices, given=given,
        schedule=sp["schedule"] or "loglinear", noise_removal=sp["noise_removal"],
        temperature=sp["temperature"], top_p=sp["top_p"], top_k=sp["top_k"],
        nucleus=sp["nucleus"], device=job.device,
    )  # fmt: skip


ENTRIES = {
    "mdlm": SamplerEntry(("ddpm_cache", "ddpm", "first_hitting", *_REMDM), "ddpm_cache",
                         _run_masked),
    "sedd": SamplerEntry(("analytic", "ddpm", "ddpm_cache", *_REMDM), "analytic", _run_masked),
    "ar": SamplerEntry(("ar",), "ar", _run_ar, conditioning="prefix"),
    "imdm": SamplerEntry(("imdm",), "imdm", _run_imdm),
}  # fmt: skip
