"""The options every sampler takes, in one object validated once.

:class:`SamplerSettings` holds the batch shape, the time grid, the draw options of
:func:`mdfast.ops.sample_x0` / :func:`mdfast.ops.mask_step` and ReMDM's remasking parameters.
Every sampler accepts a settings object or the same options as keywords
(``ddpm(model, batch_size=4, length=32, mask_index=32, steps=64)``), which build one; a bad value
raises a ``ValueError`` naming the option, before the denoiser is called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import torch

from mdfast.schedules import Schedule, get_schedule

__all__ = [
    "COMMON_OPTIONS",
    "LOOP_DEFAULTS",
    "REMDM_DEFAULTS",
    "REMDM_STRATEGIES",
    "SamplerSettings",
    "settings_for",
]

REMDM_STRATEGIES = ("cap", "rescale", "conf", "loop", "fb", "dfm")
REMDM_DEFAULTS = {"cap": 0.008, "rescale": 0.015, "loop": 0.02}
LOOP_DEFAULTS = {"t_on": 0.55, "t_off": 0.05, "alpha_on": 0.9}

_INT64_MAX = 2**63 - 1


def _bad(name: str, must: str, value) -> ValueError:
    return ValueError(f"mdfast: argument '{name}' must be {must}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SamplerSettings:
    """Options of the samplers in :mod:`mdfast.sampling`.

    Batch: ``batch_size`` sequences of ``length`` tokens, ``mask_index`` the mask id, an optional
    fixed ``prefix`` ([P] or [B, P] token ids, never remasked), on ``device``.

    Time grid: ``steps`` reverse steps on linspace(1, ``eps``, steps + 1) under ``schedule`` (a
    name of :func:`mdfast.schedules.get_schedule` or a Schedule; None = the sampler's default),
    then (``noise_removal``) the argmax of the positions still masked.

    Draws: ``temperature``, ``top_p``, ``top_k``, ``nucleus`` (``"remdm"`` or ``"hf"``) as in
    :func:`mdfast.ops.sample_x0`; ``seed`` keys the Philox stream (same seed, same samples).
    ``sample_index`` ([B] global indices of the batch's samples in a larger job, or None): each
    sample then draws from its own keyed stream (:class:`mdfast.rng.SampleCursor`), so sample g
    is the same whatever batch it runs in; None: one stream for the batch (op call k at offset k).

    Denoiser: ``time_conditioned`` (None = the sampler's default) and ``per_row_cache`` (refresh
    the cached output only for the rows whose x changed).

    ReMDM (read by :func:`mdfast.sampling.remdm` only): ``strategy``, ``eta`` (None = the
    strategy's default), and the loop's ``t_on``, ``t_off``, ``alpha_on``.
    """

    batch_size: int
    length: int
    mask_index: int
    steps: int
    seed: int = 0
    schedule: str | Schedule | None = None
    eps: float = 1e-5
    noise_removal: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    nucleus: str = "remdm"
    prefix: torch.Tensor | None = field(default=None, compare=False)
    sample_index: torch.Tensor | None = field(default=None, compare=False)
    time_conditioned: bool | None = None
    per_row_cache: bool = False
    device: torch.device | str | None = None
    strategy: str = "cap"
    eta: float | None = None
    t_on: float = LOOP_DEFAULTS["t_on"]
    t_off: float = LOOP_DEFAULTS["t_off"]
    alpha_on: float = LOOP_DEFAULTS["alpha_on"]

    def __post_init__(self):
        for name in ("batch_size", "length", "steps"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise _bad(name, "a positive int", value)
        if not _is_int(self.mask_index) or self.mask_index < 0:
            raise _bad("mask_index", "a non-negative int", self.mask_index)
        if not _is_int(self.seed) or not 0 <= self.seed <= _INT64_MAX:
            raise _bad("seed", "a non-negative int below 2**63", self.seed)
        if isinstance(self.schedule, str):
            try:
                get_schedule(self.schedule)
            except ValueError:
                raise _bad(
                    "schedule", "a name of mdfast.schedules.get_schedule", self.schedule
                ) from None
        elif self.schedule is not None and not isinstance(self.schedule, Schedule):
            raise _bad("schedule", "a schedule name or Schedule", self.schedule)
        if not _is_real(self.eps) or not 0.0 < self.eps < 1.0:
            raise _bad("eps", "in (0, 1)", self.eps)
        if not _is_real(self.temperature) or self.temperature < 0:
            raise _bad("temperature", "finite and >= 0", self.temperature)
        if not _is_real(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise _bad("top_p", "in (0, 1]", self.top_p)
        if not _is_int(self.top_k) or self.top_k < 0:
            raise _bad("top_k", ">= 0", self.top_k)
        if self.nucleus not in ("remdm", "hf"):
            raise _bad("nucleus", "'remdm' or 'hf'", self.nucleus)
        if self.sample_index is not None:
            object.__setattr__(self, "sample_index", self._check_index(self.sample_index))
        for name in ("noise_removal", "per_row_cache"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, "a bool", getattr(self, name))
        if self.time_conditioned is not None and not isinstance(self.time_conditioned, bool):
            raise _bad("time_conditioned", "a bool or None", self.time_conditioned)
        if self.strategy not in REMDM_STRATEGIES:
            raise _bad("strategy", f"one of {', '.join(REMDM_STRATEGIES)}", self.strategy)
        if self.eta is not None and (not _is_real(self.eta) or not 0.0 <= self.eta <= 1.0):
            raise _bad("eta", "in [0, 1]", self.eta)
        if not (_is_real(self.t_on) and _is_real(self.t_off) and 0 < self.t_off < self.t_on < 1):
            raise ValueError(
                "mdfast: arguments 't_on' and 't_off' must satisfy 0 < t_off < t_on < 1, got "
                f"t_on={self.t_on!r}, t_off={self.t_off!r}"
            )
        if not _is_real(self.alpha_on) or not 0.0 < self.alpha_on < 1.0:
            raise _bad("alpha_on", "in (0, 1)", self.alpha_on)

    def _check_index(self, index) -> torch.Tensor:
        try:
            index = torch.as_tensor(list(index) if isinstance(index, range) else index)
        except (TypeError, ValueError, RuntimeError):
            raise _bad("sample_index", "a sequence of ints", index) from None
        if index.dtype.is_floating_point or index.dtype == torch.bool or index.dim() != 1:
            raise _bad("sample_index", "a 1-D sequence of ints", index)
        if index.numel() != self.batch_size:
            raise ValueError(
                f"mdfast: argument 'sample_index' must hold batch_size={self.batch_size} "
                f"indices, got {index.numel()}"
            )
        if int(index.min()) < 0 or int(index.max()) >= 2**32 - 1:
            raise _bad("sample_index", "in [0, 2**32 - 1)", index)
        return index.to(torch.int64).cpu()

    @property
    def remdm_eta(self) -> float:
        """``eta``, or the strategy's default (0 for conf, fb and dfm, which do not use it)."""
        return REMDM_DEFAULTS.get(self.strategy, 0.0) if self.eta is None else self.eta

    def replace(self, **changes) -> SamplerSettings:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    @classmethod
    def build(
        cls, settings: SamplerSettings | None, options: dict, *, sampler: str, allowed, **defaults
    ) -> SamplerSettings:
        """The settings a sampler runs with: ``settings`` (or ``defaults``) with the keyword
        ``options`` on top. ``allowed``: the option names this sampler reads."""
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(
                f"mdfast: {sampler}() got unknown option(s) {unknown}; valid: {sorted(allowed)}"
            )
        if settings is None:
            return cls(**{**defaults, **options})
        if not isinstance(settings, cls):
            raise TypeError(
                f"mdfast: argument 'settings' must be a SamplerSettings, got {type(settings)}"
            )
        return replace(settings, **options) if options else settings


FIELDS = tuple(f.name for f in fields(SamplerSettings))

# the options every sampler reads; each sampler adds its own
COMMON_OPTIONS = ("batch_size", "length", "mask_index", "steps", "seed", "schedule", "eps",
                  "noise_removal", "temperature", "top_p", "top_k", "nucleus", "prefix",
                  "sample_index", "device")  # fmt: skip


def settings_for(
    sampler: str, settings: SamplerSettings | None, options: dict, *extra: str
) -> SamplerSettings:
    """The settings ``sampler`` runs with: ``settings`` with the keyword ``options`` on top; an
    option outside :data:`COMMON_OPTIONS` and ``extra`` raises a TypeError naming it."""
    return SamplerSettings.build(
        settings, options, sampler=sampler, allowed=(*COMMON_OPTIONS, *extra)
    )
