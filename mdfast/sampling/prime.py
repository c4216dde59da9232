"""The MDM-Prime sampler: partial unmasking of ℓ-digit tokens with the image code's knobs.

Time runs in the image code's convention, τ = 0 (all masked) → τ = 1 (data), on the grid
τ_k = k/N, N = ``nfe`` denoiser calls (a process in the MDLM convention is driven at t = 1 − τ).
For k = 0 … N − 2, with τ = w(τ_k), σ = w(τ_{k+1}) and h = σ − τ:

1. logits z = f(y_τ) (one call), tempered by T(τ) = a·τ^b + c (``temperature_parameters``);
2. predictor (:func:`mdfast.ops.prime_sample_step` through :meth:`mdfast.diffusion.Prime.step`):
   each masked digit reveals with probability (α_σ − α_τ)/(1 − α_τ); ``carry_over=False``
   (default) reveals the digits of one class ĉ ~ softmax(z/T) over the classes consistent with
   the visible digits (the exact ancestral step); ``carry_over=True`` (the seed's flag) draws each
   revealed digit from its own marginal;
3. corrector (``corrector_parameters`` a b [c]; :meth:`mdfast.diffusion.Prime.corrector_step`):
   with β(τ) = a·τ^b·(1 − τ)^b every digit jumps w.p. 1 − exp(−h Σu), u(ŷ) = α'/(1 − α)·(1 + β)
   and u(mask) = β·α'/α (re-masking or switching visible digits). The seed accepts a third number
   c and never reads it; so do we.

The last call (k = N − 1, at τ = w(τ_{N−1})) reveals every digit still masked.

Timestep warp (``timestep_parameters`` a b c): w(τ) = 1 − a(1 − τ)^b + c, finer steps near the
data end for b > 1. With b = 0 the warp is constant; the seed's (1, 0, 0) gives w ≡ 0, so every
call sees the all-masked input and everything is drawn at the last call (one-shot sampling).
The seed's README tables list (1, 0, 0) where the warp is meant to be off, so a constant warp is
treated as off (identity, with a warning) unless ``timestep_all_at_last=True`` asks for the
seed's behaviour (also with a warning).

Randomness: each call's ops take (seed, offset) from a :class:`mdfast.rng.PhiloxStream` of
``seed``: the same seed gives the same samples on CPU and GPU. :func:`sample_batches` splits a
job of n samples into fixed batches of global sample indices, each with its own Philox seed
(:func:`mdfast.rng.stream_seed` with ``Purpose.BATCH``),
dealt round-robin over ``torch.distributed`` ranks: 1 process and N processes make the same
samples (for the same ``batch_size``).

Imputation: ``fixed_digits`` (digit positions j) are copied from a real image into the initial
state and never change (predictor and corrector both leave them alone).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from mdfast.rng import PhiloxStream, Purpose, stream_seed

__all__ = [
    "BatchJob",
    "PrimeSamplerSettings",
    "batch_plan",
    "prime_sample",
    "sample_batches",
    "sampler_step",
    "time_grid",
]

_INT64_MAX = 2**63 - 1


def _bad(name: str, must: str, value) -> ValueError:
    return ValueError(f"mdfast: '{name}' must be {must}, got {value!r}")


def _reals(name: str, value, sizes: tuple[int, ...]) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except TypeError:
        raise _bad(name, f"a list of {' or '.join(map(str, sizes))} numbers", value) from None
    if len(out) not in sizes or not all(math.isfinite(v) for v in out):
        raise _bad(name, f"a list of {' or '.join(map(str, sizes))} finite numbers", value)
    return out


@dataclass(frozen=True)
class PrimeSamplerSettings:
    """Options of :func:`prime_sample` (names as the seed's flags; see the module docstring).
    Its own class, not :class:`mdfast.sampling.SamplerSettings`: the state is digits, not
    tokens, and the temperature, corrector and warp are the seed's parametric schedules.

    ``nfe``: denoiser calls N ≥ 1. ``carry_over``: per-digit marginal draws instead of the exact
    joint step. ``temperature_parameters`` (a, b, c): T(τ) = a τ^b + c, > 0 on the grid.
    ``corrector_parameters``: () = off, or (a, b) / (a, b, c) with c unused.
    ``timestep_parameters``: () = off, or (a, b, c). ``timestep_all_at_last``: run a constant
    warp as the seed does.
    ``seed``: the Philox seed.
    """

    nfe: int = 512
    carry_over: bool = False
    temperature_parameters: tuple = (1.0, 0.0, 0.0)
    corrector_parameters: tuple = ()
    timestep_parameters: tuple = ()
    timestep_all_at_last: bool = False
    seed: int = 0
    _warp_off: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.nfe, bool) or not isinstance(self.nfe, int) or self.nfe < 1:
            raise _bad("nfe", "a positive int", self.nfe)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise _bad("seed", "an int in [0, 2**63)", self.seed)
        if not 0 <= self.seed <= _INT64_MAX:
            raise _bad("seed", "an int in [0, 2**63)", self.seed)
        for name in ("carry_over", "timestep_all_at_last"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, "a bool", getattr(self, name))
        set_ = object.__setattr__
        set_(
            self,
            "temperature_parameters",
            _reals("temperature_parameters", self.temperature_parameters, (3,)),
        )
        if self.corrector_parameters:
            c = _reals("corrector_parameters", self.corrector_parameters, (2, 3))
            if c[0] < 0 or c[1] < 0:
                raise _bad("corrector_parameters", "a >= 0 and b >= 0 (β = a τ^b (1-τ)^b)", c)
            set_(self, "corrector_parameters", c)
        else:
            set_(self, "corrector_parameters", ())
        if self.timestep_parameters:
            a, b, c = _reals("timestep_parameters", self.timestep_parameters, (3,))
            set_(self, "timestep_parameters", (a, b, c))
            if b == 0 and not self.timestep_all_at_last:
                set_(self, "_warp_off", True)
            elif b != 0:
                if b < 0 or a < 0 or 1 + c > 1 + 1e-12 or 1 + c - a < -1e-12:
                    raise _bad(
                        "timestep_parameters",
                        "(a, b, c) with a >= 0, b >= 0, c <= 0 and 1 + c - a >= 0 (so that "
                        "w(τ) = 1 - a(1-τ)^b + c increases within [0, 1])",
                        (a, b, c),
                    )
        else:
            set_(self, "timestep_parameters", ())
        for tau in time_grid(self):
            temp = self.temperature(tau)
            if not (temp > 0 and math.isfinite(temp)):
                raise _bad(
                    "temperature_parameters",
                    f"such that T(τ) = a τ^b + c > 0 on the time grid (T({tau:.4g}) = {temp:.4g})",
                    self.temperature_parameters,
                )

    @property
    def mode(self) -> str:
        return "marginal" if self.carry_over else "exact"

    def temperature(self, tau: float) -> float:
        a, b, c = self.temperature_parameters
        return a * tau**b + c

    def corrector_rate(self) -> tuple[float, float] | None:
        """(a, b) of β(τ) = a τ^b (1 − τ)^b, or None when the corrector is off."""
        return tuple(self.corrector_parameters[:2]) if self.corrector_parameters else None

    def warp(self, tau: float) -> float:
        if not self.timestep_parameters or self._warp_off:
            return tau
        a, b, c = self.timestep_parameters
        return min(1.0, max(0.0, 1.0 - a * (1.0 - tau) ** b + c))


def time_grid(settings: PrimeSamplerSettings) -> list[float]:
    """[w(τ_0), …, w(τ_{N−1})]: the times of the N denoiser calls (τ_k = k / N)."""
    return [settings.warp(k / settings.nfe) for k in range(settings.nfe)]


def _warn_about_warp(settings: PrimeSamplerSettings) -> None:
    if settings._warp_off:
        warnings.warn(
            f"mdfast: timestep_parameters {settings.timestep_parameters} give a constant warp "
            "w(τ) (b = 0; the seed's (1, 0, 0) maps every time to 0 and draws everything at the "
            "last step); treated as no warp. Set timestep_all_at_last=True to reproduce the "
            "seed's behaviour.",
            RuntimeWarning,
            stacklevel=3,
        )
    elif settings.timestep_all_at_last and settings.timestep_parameters:
        if settings.timestep_parameters[1] == 0:
            warnings.warn(
                f"mdfast: timestep_all_at_last with timestep_parameters "
                f"{settings.timestep_parameters}: every call sees the same time "
                f"{settings.warp(0.0):g} and the digits still masked are all drawn at the last "
                "call (the seed's behaviour; not a multi-step sampler)",
                RuntimeWarning,
                stacklevel=3,
            )


@torch.no_grad()
def prime_sample(
    denoiser: Callable[[torch.Tensor, float], torch.Tensor],
    process,
    digits: torch.Tensor,
    settings: PrimeSamplerSettings,
    *,
    fixed_digits: torch.Tensor | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run the sampler from ``digits`` int64[B, L, ℓ] (usually all ``process.mask_id``; for
    imputation the fixed positions already hold their digits).

    ``denoiser(digits [B, L, ℓ], τ) -> logits [B, L, C]`` (τ in the image convention, for
    time-conditioned models; the MDM-Prime models ignore it). ``process``: a
    :class:`mdfast.diffusion.Prime` (its schedule gives α, its convention the direction of time).
    Returns the final digits, every one revealed and every token a class < C.
    """
    if digits.dim() != 3 or digits.shape[-1] != process.num_digits:
        raise ValueError(
            f"mdfast: 'digits' must be [B, L, {process.num_digits}], got {list(digits.shape)}"
        )
    _warn_about_warp(settings)
    if fixed_digits is not None:
        fixed_digits = torch.as_tensor(fixed_digits, dtype=torch.int64).reshape(-1)
        if fixed_digits.numel() and (
            int(fixed_digits.min()) < 0 or int(fixed_digits.max()) >= process.num_digits
        ):
            raise ValueError(
                f"mdfast: 'fixed_digits' (sub-token indices) must lie in [0, "
                f"{process.num_digits}), got {fixed_digits.tolist()}"
            )
        fixed_digits = fixed_digits.to(digits.device)
    rng = PhiloxStream(settings.seed)
    grid = time_grid(settings)
    y = digits.clone()
    steps = range(settings.nfe)
    if progress:
        from tqdm import tqdm

        steps = tqdm(
            steps, desc="sampling", unit="call", leave=False, disable=not sys.stderr.isatty()
        )
    for k in steps:
        last = k == settings.nfe - 1
        tau, sigma = grid[k], (1.0 if last else grid[k + 1])
        y = sampler_step(
            process,
            denoiser(y, tau),
            y,
            tau,
            sigma,
            settings,
            rng,
            fixed_digits=fixed_digits,
            last=last,
        )
    return y


def sampler_step(
    process,
    logits: torch.Tensor,
    digits: torch.Tensor,
    tau: float,
    sigma: float,
    settings: PrimeSamplerSettings,
    rng: PhiloxStream,
    *,
    fixed_digits: torch.Tensor | None = None,
    last: bool = False,
) -> torch.Tensor:
    """One call's update (image-convention times τ → σ; ``last`` reveals everything): the
    predictor at temperature T(τ), then, unless ``last``, the corrector with h = σ − τ. Takes one
    Philox offset for the predictor and two for the corrector from ``rng``."""
    mdlm = process.convention == "mdlm"

    def proc(t: float) -> float:  # image-convention time -> the process's own
        return 1.0 - t if mdlm else t

    temp = settings.temperature(tau)
    seed, offset = rng.next()
    y = process.step(
        logits,
        digits,
        proc(tau),
        proc(1.0 if last else sigma),
        temperature=temp,
        mode=settings.mode,
        fixed_digits=fixed_digits,
        seed=seed,
        offset=offset,
    )
    corrector = settings.corrector_rate()
    if corrector is not None and not last and sigma > tau:
        seed, offset = rng.next(2)
        y = process.corrector_step(
            logits,
            y,
            proc(tau),
            sigma - tau,
            a=corrector[0],
            b=corrector[1],
            temperature=temp,
            mode=settings.mode,
            fixed_digits=fixed_digits,
            seed=seed,
            offset=offset,
        )
    return y


@dataclass(frozen=True)
class BatchJob:
    """Batch ``index`` of a sampling job: global samples [start, start + size), Philox ``seed``."""

    index: int
    start: int
    size: int
    seed: int


def batch_plan(num_samples: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
    """This rank's batches of a job of ``num_samples`` samples: batch i covers global samples
    [i·batch_size, …) and has its own Philox seed (:func:`mdfast.rng.stream_seed` of ``seed``,
    ``Purpose.BATCH`` and i); batches go to
    ranks round-robin, so the samples do not depend on the number of processes."""
    if num_samples < 1 or batch_size < 1:
        raise ValueError(
            f"mdfast: need num_samples >= 1 and batch_size >= 1, got {num_samples}, {batch_size}"
        )
    n_batches = math.ceil(num_samples / batch_size)
    return [
        BatchJob(
            i,
            i * batch_size,
            min(batch_size, num_samples - i * batch_size),
            stream_seed(seed, Purpose.BATCH, i),
        )
        for i in range(rank, n_batches, world)
    ]


def sample_batches(
    run: Callable[[BatchJob], torch.Tensor], num_samples: int, batch_size: int, seed: int
) -> Iterator[tuple[BatchJob, torch.Tensor]]:
    """Yield ``(job, run(job))`` for this process's batches (rank and world from
    ``torch.distributed`` when a process group is up), see :func:`batch_plan`."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    for job in batch_plan(num_samples, batch_size, seed, rank, world):
        yield job, run(job)
