"""Samplers of discrete interpolants ("[MASK] is All You Need"): the Euler CTMC sampler and the
MaskGIT sampler, both with classifier-free guidance (:mod:`mdfast.sampling.guidance`) and both on
the fused ops: a step calls the denoiser once (2B samples under guidance) and draws tokens for the
masked rows only, in one :func:`mdfast.ops.mask_step` (Euler) or :func:`mdfast.ops.sample_x0`
(MaskGIT) call, with no other B×L×V buffer than the logits.

Time s runs from 0 (all mask) to 1 (data); ``model(x [B, *shape], **cond) -> logits
[B, *shape, V]``; the mask class is left out of every draw.

**Euler** (the seed's ``SimpleSampler``). On the grid s_k = t_min + k·h, h = (1 − t_min)/steps,
the CTMC with rate u = κ'(s)/(1 − κ(s))·(p_θ − δ_x) moves a masked token to v with probability
h·κ'(s)/(1 − κ(s))·p_θ(v) and leaves it masked otherwise; revealed tokens never change. That is
:func:`mdfast.ops.mask_step` with α_t = κ(s_k), α_s = min(1, κ(s_k) + h·κ'(s_k)) (unmask
probability (α_s − α_t)/(1 − α_t) = h·κ'/(1 − κ); h/(1 − s) for linear κ, MDLM's ancestral step).
The last step goes to s = 1 (κ = 1) and reveals every token still masked (the seed leaves them
masked unless ``max_last``). Options:

* ``temperature``, ``top_k``, ``top_p`` (nucleus with :func:`mdfast.ops.sample_x0`'s semantics,
  1 = off);
* ``max_last``: the last step reveals with the argmax (the seed's ``argmax_p``);
* ``anneal_noise``: after revealing, each token revealed before this step is re-masked with
  probability σ: ``linear`` σ = 1 − s − h, ``warmup`` the same while s < 0.6 (else 0),
  ``campbell`` σ = 4h, ``none``; never at the last step (the seed's remasking rules).

**MaskGIT** (the seed's ``MaskgitSampler``). A reveal schedule fixes how many tokens appear per
step: r = linspace(1, 0, steps), weights w = 1 − r (``linear``), cos(πr/2) (``cosine``),
arccos(r)/(π/2) (``arccos``), 1 − √r (``root``), 1 − r² (``square``); counts round(w/Σw·L),
at least 1 each, the last one making the total L (:func:`reveal_counts`). At each step every masked
token draws a candidate from softmax(z/τ) (top-k/top-p) with its probability p as confidence;
with ``randomize="linear"`` the confidence is log p + r_temp·(1 − i/(steps − 1))·g, g ~ Gumbel
(the seed's linear decay, r_temp = 4.5), ``"random"`` a uniform, ``"warm_up"`` a uniform in the
first two steps; the scheduled number of most confident masked tokens per sample are revealed.

**Guidance**: ``cfg_scale`` s gives z_u + s·(z_c − z_u) with the condition ``cond``
(``{"y": labels}`` or ``{"context": embeddings}``); s = 0 is the unconditional model, s = 1 the
conditional one.

Randomness: a :class:`mdfast.rng.PhiloxStream` of ``seed``, one offset per op call; the same seed
gives the same samples on CPU and CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from mdfast import ops
from mdfast.rng import PhiloxStream
from mdfast.sampling.chain import SampleResult
from mdfast.sampling.guidance import check_guidance, guided_logits
from mdfast.sampling.settings import _bad, _is_int, _is_real
from mdfast.schedules import dkappa, kappa, kappa_schedule

__all__ = [
    "ANNEAL_NOISE",
    "RANDOMIZE",
    "REVEAL_SCHEDULES",
    "InterpolantSettings",
    "euler",
    "euler_step",
    "maskgit",
    "maskgit_step",
    "reveal_counts",
]

REVEAL_SCHEDULES = ("linear", "cosine", "arccos", "root", "square")
RANDOMIZE = ("none", "linear", "warm_up", "random")
ANNEAL_NOISE = ("none", "linear", "warmup", "campbell")


@dataclass(frozen=True)
class InterpolantSettings:
    """Options of :func:`euler` and :func:`maskgit`, validated once (errors name the option).

    ``batch_size`` samples of token grids ``shape`` (e.g. ``(32, 32)`` VQ latents, ``(L,)``),
    ``mask_index`` the mask id, ``steps`` denoiser steps, ``seed``; ``cfg_scale`` (1 = no
    guidance); ``temperature`` / ``top_k`` / ``top_p``; Euler: ``kappa``, ``t_min``, ``max_last``,
    ``anneal_noise``; MaskGIT: ``reveal``, ``randomize``, ``r_temp``. ``time_cond``: pass s to the
    model (None: when ``model.config.time_cond``). ``progress``: a tqdm bar.
    """

    batch_size: int
    shape: tuple
    mask_index: int
    steps: int
    seed: int = 0
    cfg_scale: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    kappa: str = "linear"
    t_min: float = 0.0
    max_last: bool = False
    anneal_noise: str = "none"
    reveal: str = "linear"
    randomize: str = "linear"
    r_temp: float = 4.5
    time_cond: bool | None = None
    progress: bool = False
    device: torch.device | str | None = None

    def __post_init__(self):
        shape = (self.shape,) if _is_int(self.shape) else tuple(self.shape)
        object.__setattr__(self, "shape", shape)
        for name in ("anneal_noise", "randomize"):  # None (a config's null) = "none"
            if getattr(self, name) is None:
                object.__setattr__(self, name, "none")
        if not shape or not all(_is_int(s) and s >= 1 for s in shape):
            raise _bad("shape", "a tuple of positive ints", self.shape)
        for name in ("batch_size", "steps"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise _bad(name, "an int >= 1", getattr(self, name))
        if not _is_int(self.mask_index) or self.mask_index < 0:
            raise _bad("mask_index", "an int >= 0", self.mask_index)
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise _bad("seed", "an int in [0, 2**63)", self.seed)
        if not _is_real(self.cfg_scale) or self.cfg_scale < 0:
            raise _bad("cfg_scale", "a finite number >= 0", self.cfg_scale)
        if not _is_real(self.temperature) or self.temperature < 0:
            raise _bad("temperature", "finite and >= 0", self.temperature)
        if not _is_int(self.top_k) or self.top_k < 0:
            raise _bad("top_k", "an int >= 0", self.top_k)
        if not _is_real(self.top_p) or not 0 < self.top_p <= 1:
            raise _bad("top_p", "in (0, 1]", self.top_p)
        kappa_schedule(self.kappa)
        if not _is_real(self.t_min) or not 0 <= self.t_min < 1:
            raise _bad("t_min", "in [0, 1)", self.t_min)
        if not isinstance(self.max_last, bool):
            raise _bad("max_last", "a bool", self.max_last)
        if self.anneal_noise not in ANNEAL_NOISE:
            raise _bad("anneal_noise", f"one of {list(ANNEAL_NOISE)}", self.anneal_noise)
        if self.reveal not in REVEAL_SCHEDULES:
            raise _bad("reveal", f"one of {list(REVEAL_SCHEDULES)}", self.reveal)
        if self.randomize not in RANDOMIZE:
            raise _bad("randomize", f"one of {list(RANDOMIZE)}", self.randomize)
        if not _is_real(self.r_temp) or self.r_temp < 0:
            raise _bad("r_temp", "a finite number >= 0", self.r_temp)
        if self.time_cond is not None and not isinstance(self.time_cond, bool):
            raise _bad("time_cond", "a bool or None", self.time_cond)

    @property
    def length(self) -> int:
        return math.prod(self.shape)

    @classmethod
    def build(cls, settings, options: dict) -> InterpolantSettings:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"mdfast: unknown sampler option(s) {unknown}; valid: {sorted(names)}")
        if settings is None:
            return cls(**options)
        if not isinstance(settings, cls):
            raise TypeError(
                f"mdfast: argument 'settings' must be an InterpolantSettings, got {type(settings)}"
            )
        return replace(settings, **options) if options else settings


def reveal_counts(steps: int, length: int, mode: str = "linear") -> list[int]:
    """Tokens revealed at each of ``steps`` MaskGIT steps for ``length`` tokens (the seed's
    ``adap_scheduler``, module docstring): every count ≥ 1 and the counts sum to ``length``.
    Where the seed's rounding would leave the last count < 1, the excess is taken from the
    largest counts instead."""
    if not _is_int(steps) or steps < 1:
        raise _bad("steps", "an int >= 1", steps)
    if steps > length:
        raise ValueError(
            f"mdfast: argument 'steps' must be <= the number of tokens ({length}) for MaskGIT, "
            f"which reveals at least one token per step; got {steps}"
        )
    if mode not in REVEAL_SCHEDULES:
        raise _bad("reveal", f"one of {list(REVEAL_SCHEDULES)}", mode)
    if steps == 1:  # linspace(1, 0, 1) = [1]: weight 0 in most modes; one step reveals all
        return [length]
    r = torch.linspace(1, 0, steps, dtype=torch.float64)
    w = {
        "linear": lambda: 1 - r,
        "cosine": lambda: torch.cos(r * math.pi / 2),
        "arccos": lambda: torch.arccos(r) / (math.pi / 2),
        "root": lambda: 1 - r.sqrt(),
        "square": lambda: 1 - r**2,
    }[mode]()
    counts = [max(1, int(c)) for c in torch.round(w / w.sum() * length).tolist()]
    counts[-1] += length - sum(counts)
    while counts[-1] < 1:  # rounding overshoot: take it from the largest earlier counts
        i = max(range(steps - 1), key=lambda j: (counts[j], j))
        counts[i] -= 1
        counts[-1] += 1
    return counts


class _Run:
    """What a sampler run shares: settings, denoiser calls (guided), the RNG stream, x."""

    def __init__(self, model, settings: InterpolantSettings, cond: dict | None):
        self.model, self.st = model, settings
        device = settings.device
        if device is None:
            p = next(iter(getattr(model, "parameters", lambda: iter(()))()), None)
            device = p.device if p is not None else "cpu"
        self.device = torch.device(device)
        self.cond = {k: v.to(self.device) for k, v in (cond or {}).items()}
        for k, v in self.cond.items():
            if v.shape[0] != settings.batch_size:
                raise ValueError(
                    f"mdfast: condition '{k}' has {v.shape[0]} rows but batch_size is "
                    f"{settings.batch_size}"
                )
        check_guidance(model, self.cond, float(settings.cfg_scale))
        tc = settings.time_cond
        if tc is None:
            tc = bool(getattr(getattr(model, "config", None), "time_cond", False))
        self.time_cond = tc
        self.rng = PhiloxStream(settings.seed)
        b, n = settings.batch_size, settings.length
        self.x = torch.full((b, n), settings.mask_index, dtype=torch.int64, device=self.device)
        self.nfe = 0
        self.sequences = 0

    def logits(self, s: float) -> torch.Tensor:
        """Guided logits [B, L, V] at x (time s for time-conditioned models)."""
        st = self.st
        b = st.batch_size
        t = torch.full((b,), s, device=self.device) if self.time_cond else None
        z = guided_logits(self.model, self.x.view(b, *st.shape), self.cond, st.cfg_scale, t=t)
        self.nfe += 1
        self.sequences += b if st.cfg_scale in (0.0, 1.0) else 2 * b
        if z.shape[: 1 + len(st.shape)] != (b, *st.shape) or z.shape[-1] <= st.mask_index:
            raise ValueError(
                f"mdfast: the model returned logits of shape {list(z.shape)}; expected "
                f"[{b}, {', '.join(map(str, st.shape))}, V] with V > mask_index={st.mask_index}"
            )
        return z.reshape(b, st.length, z.shape[-1])

    def draw_kw(self) -> dict:
        seed, offset = self.rng.next()
        return {"seed": seed, "offset": offset}

    def steps(self, total: int):
        if not self.st.progress:
            return range(total)
        from tqdm.auto import tqdm

        return tqdm(range(total), desc="sampling", leave=False)

    def result(self) -> SampleResult:
        x = self.x.view(self.st.batch_size, *self.st.shape)
        return SampleResult(x, self.nfe, self.nfe, self.sequences)


def _anneal_sigma(mode: str, s: float, h: float) -> float:
    if mode == "linear" or (mode == "warmup" and s < 0.6):
        return min(1.0, max(0.0, 1.0 - s - h))
    if mode == "campbell":
        return min(1.0, 4.0 * h)
    return 0.0


def _kappa_at(s: float, name: str) -> tuple[float, float]:
    t = torch.tensor(s, dtype=torch.float64)
    return float(kappa(t, name)), float(dkappa(t, name))


def euler_step(
    x: torch.Tensor,
    logits: torch.Tensor,
    s: float,
    h: float,
    settings: InterpolantSettings,
    *,
    last: bool = False,
    seed: int,
    offset: int,
) -> torch.Tensor:
    """One Euler step s → s + h of x [B, L] with logits [B, L, V] (module docstring): a masked
    token is revealed with probability min(1, h·κ'(s)/(1 − κ(s))) (1 when ``last``), its value
    drawn from the logits (argmax when ``last`` and ``max_last``); then ``anneal_noise``
    re-masks revealed tokens (not when ``last``). One :func:`mdfast.ops.mask_step`."""
    st = settings
    a_t, da = _kappa_at(s, st.kappa)
    a_s = 1.0 if last else min(1.0, a_t + h * da)
    sigma = 0.0 if last else _anneal_sigma(st.anneal_noise, s, h)
    remask = None
    if sigma > 0.0:  # only tokens revealed before this step; masked ones get sigma 0
        remask = (x != st.mask_index).to(torch.float64) * sigma
    x_next, _, _ = ops.mask_step(
        x,
        logits,
        mask_index=st.mask_index,
        alpha_t=min(a_t, a_s),
        alpha_s=a_s,
        remask=remask,
        temperature=0.0 if (last and st.max_last) else st.temperature,
        top_p=st.top_p,
        top_k=st.top_k,
        seed=seed,
        offset=offset,
    )
    return x_next


def maskgit_step(
    x: torch.Tensor,
    logits: torch.Tensor,
    count: int,
    step: int,
    settings: InterpolantSettings,
    rng: PhiloxStream,
    *,
    masked: int,
) -> torch.Tensor:
    """MaskGIT step ``step`` (0-based) of x [B, L] with logits [B, L, V], where every sample has
    exactly ``masked`` ≥ ``count`` masked tokens: each masked token draws a candidate (one
    :func:`mdfast.ops.sample_x0` over the B·``masked`` masked rows) and the ``count`` most
    confident masked tokens of each sample are revealed (module docstring). No host
    synchronisation: the masked rows come from a stable sort, not ``nonzero``."""
    st = settings
    b, n = x.shape
    # each sample's masked positions first (ascending), then its revealed ones
    order = torch.argsort((x != st.mask_index).to(torch.int8), dim=1, stable=True)[:, :masked]
    rows = (order + n * torch.arange(b, device=x.device)[:, None]).reshape(-1)
    seed, offset = rng.next()
    token, prob = ops.sample_x0(
        logits.reshape(b * n, -1),
        rows,
        temperature=st.temperature,
        top_p=st.top_p,
        top_k=st.top_k,
        exclude_index=st.mask_index,
        seed=seed,
        offset=offset,
    )
    conf = prob.double().clamp_min(1e-300).log()
    if st.randomize == "linear":
        decay = 1.0 - (step / (st.steps - 1) if st.steps > 1 else 0.0)
        seed, offset = rng.next()
        u = ops.uniform((b * n,), seed, offset, dtype=torch.float64, device=x.device)[rows]
        conf = conf + st.r_temp * decay * -torch.log(-torch.log(u))
    elif st.randomize == "random" or (st.randomize == "warm_up" and step < 2):
        seed, offset = rng.next()
        conf = ops.uniform((b * n,), seed, offset, dtype=torch.float64, device=x.device)[rows]
    pick = conf.view(b, masked).topk(count, dim=1).indices  # among the masked tokens only
    pos = order.gather(1, pick)
    return x.scatter(1, pos, token.view(b, masked).gather(1, pick))


@torch.no_grad()
def euler(model, settings: InterpolantSettings | None = None, /, *, cond: dict | None = None,
          **options) -> SampleResult:  # fmt: skip
    """The Euler CTMC sampler (module docstring). ``cond``: the condition (``{"y": labels}``,
    ``{"context": ...}``), needed for ``cfg_scale`` != 1. Returns :class:`SampleResult` with
    ``x`` [B, *shape]."""
    st = InterpolantSettings.build(settings, options)
    run = _Run(model, st, cond)
    h = (1.0 - st.t_min) / st.steps
    for k in run.steps(st.steps):
        s = st.t_min + k * h
        z = run.logits(s)
        run.x = euler_step(run.x, z, s, h, st, last=k == st.steps - 1, **run.draw_kw())
        del z
    return run.result()


@torch.no_grad()
def maskgit(model, settings: InterpolantSettings | None = None, /, *, cond: dict | None = None,
            **options) -> SampleResult:  # fmt: skip
    """The MaskGIT sampler (module docstring). A time-conditioned model gets s = the fraction of
    tokens revealed so far (the seed passes 0, which suits only its models without time input).
    """
    st = InterpolantSettings.build(settings, options)
    counts = reveal_counts(st.steps, st.length, st.reveal)
    run = _Run(model, st, cond)
    revealed = 0
    for i in run.steps(st.steps):
        z = run.logits(revealed / st.length)
        run.x = maskgit_step(run.x, z, counts[i], i, st, run.rng, masked=st.length - revealed)
        del z
        revealed += counts[i]
    return run.result()
