"""IMDM's ancestral sampler: MDLM's chain on the tokens plus the continuous noise ε of the masked
positions, carried across steps.

A masked position at t with noise ε moves to s < t by IMDM's three-way posterior
(:func:`mdfast.diffusion.imdm_posterior`, r = α_t/α_s):

* unmask to v ~ p_θ(· | x_t, ε)        with probability (α_s − α_t)/(1 − α_t),
* stay masked and keep ε               with probability (r − α_t)/(1 − α_t),
* stay masked and redraw ε             with probability (1 − r)(1 − α_s)/(1 − α_t).

Keep + redraw = (1 − α_s)/(1 − α_t), MDLM's stay-masked mass, so the token marginal of a step is
MDLM's. The sampler draws it as two independent events: the unmask event of
:func:`mdfast.ops.mask_step` (MDLM's probability, O(1) per position, the token drawn by
:func:`mdfast.ops.sample_x0` from the head rows of the unmasking positions only), then for the
positions that stay masked a redraw event with probability 1 − α_t/α_s
(:func:`mdfast.diffusion.imdm.redraw_probability`), whose product with the stay mass is the
redraw mass above. No B × L × V tensor is formed: the denoiser's hidden states are cached and
logits are computed for the unmasking rows.

ε is seeded per sample (:func:`mdfast.diffusion.seeded_eps`, keyed noise of
:class:`mdfast.rng.NoiseKey` whose sample index is the ε seed): sample b has an ε seed
``eps_seeds[b]`` in [0, 2^31); its initial ε and the fresh ε of a redraw at step k are functions of
that seed alone, so samples given the same seed share ε (IMDM's duplicated samples, the total
correlation metric) and a coupling file that stores the seed regenerates the noise. The seed code
redraws ε with unseeded noise (``torch.rand``); here a redraw at step k is the seeded draw of
step k (``seeded_eps(seed, step=k)``), so the whole ε path is a function of the seed.

``fix_eps`` never redraws (IM-SDTT's teacher); ``mdlm_posterior`` uses MDLM's two-way posterior,
which also keeps ε: the two switches give the same chain. The denoiser is not time-conditioned,
so its output is reused while neither a token nor an ε changed (the seed code reuses it whenever
no token changed, dropping the ε redraws of those steps).

Time grid: t_k = linspace(1, eps, K + 1)_k · t_start (per sample; ``t_start`` < 1 with a partly
masked ``x_start`` continues a trajectory, as the coupling generation does). The last step goes
to α = 1 (``last_step="ancestral"``, IMDM's ``noise_removal=ancestral``: every position still
masked draws its token), or to t = eps followed by the argmax of the positions still masked
(``"argmax"``, MDLM's ``ddpm``).
"""

from __future__ import annotations

import torch

from mdfast import ops
from mdfast.diffusion.imdm import EPS_SEEDS, redraw_probability, seeded_eps
from mdfast.rng import NoiseKey, PhiloxStream, Purpose, SampleCursor, stream_seed
from mdfast.sampling.chain import (
    SampleResult,
    _cursor,
    _Denoiser,
    _draw_rows,
    _grid,
    _init_x,
    _mask_step,
    _noise_removal,
    _nvtx,
)
from mdfast.sampling.settings import SamplerSettings, settings_for
from mdfast.schedules import get_schedule

__all__ = ["IMDM_OPTIONS", "default_eps_seeds", "imdm"]

# the options of imdm() beyond the ones every sampler takes
IMDM_OPTIONS = ("fix_eps", "mdlm_posterior", "eps_seeds", "x_start", "t_start", "last_step",
                "cache")  # fmt: skip
_LAST_STEPS = ("ancestral", "argmax")


def default_eps_seeds(seed: int, index, device=None) -> torch.Tensor:
    """The ε seeds of samples when none are given: sample g (``index``: [B] global sample
    indices, or an int B for 0..B−1) gets ⌊u·2^31⌋ with u its ``Purpose.EPSILON`` keyed uniform
    (id ``"seeds"``) of :class:`mdfast.rng.NoiseKey` (``seed``, step 0, g), so a sample's ε seed
    does not depend on the batch it is drawn in. int64 [B]."""
    if isinstance(index, int) and not isinstance(index, bool):
        index = torch.arange(index)
    index = torch.as_tensor(index, dtype=torch.int64).reshape(-1).cpu()
    if index.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    key = NoiseKey(seed, 0, index, int(index.max()) + 1)
    u = key.uniform(Purpose.EPSILON, (), "seeds", device=device)
    return (u * EPS_SEEDS).floor().to(torch.int64).clamp_(0, EPS_SEEDS - 1)


class _EpsDenoiser(_Denoiser):
    """Calls an ε-aware model (``hidden(x, eps=ε)`` + ``head``, or ``model(x, eps=ε)``)."""

    def __call__(self, x: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        self.sequences += x.shape[0]
        with _nvtx("denoise"):
            fn = self.model.hidden if self.split else self.model
            return fn(x) if eps is None else fn(x, eps=eps)


def _alphas(steps, schedule, eps, t_start, batch, device) -> torch.Tensor:
    """float64 [steps + 1, B]: α at the grid times linspace(1, eps, steps + 1) · t_start."""
    sched = get_schedule(schedule) if isinstance(schedule, str) else schedule
    grid = [t for t, _ in _grid(steps, eps)] + [eps]
    times = torch.tensor(grid, dtype=torch.float64, device=device)[:, None]
    if t_start is None:
        return sched.alpha(times).expand(-1, batch).contiguous()
    return sched.alpha(times * t_start[None, :])


def _start(x_start, t_start, st: SamplerSettings):
    """(x, t_start or None): the initial state, all-mask with an optional prefix, or ``x_start``
    (a partly masked batch) with its start times."""
    batch_size, length = st.batch_size, st.length
    if x_start is None:
        if t_start is not None:
            raise ValueError("mdfast: argument 't_start' needs 'x_start' (the partly masked batch)")
        return _init_x(st)[0], None
    if st.prefix is not None:
        raise ValueError("mdfast: give either 'prefix' or 'x_start', not both")
    x = torch.as_tensor(x_start, device=st.device).to(torch.int64).clone()
    if tuple(x.shape) != (batch_size, length):
        raise ValueError(
            f"mdfast: argument 'x_start' must have shape [batch_size, length] = "
            f"[{batch_size}, {length}], got {list(x.shape)}"
        )
    if t_start is None:
        return x, None
    t = torch.as_tensor(t_start, dtype=torch.float64, device=x.device).reshape(-1)
    if t.shape[0] != batch_size:
        raise ValueError(
            f"mdfast: argument 't_start' must have shape [batch_size] = [{batch_size}], got "
            f"{list(t.shape)}"
        )
    if not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError("mdfast: argument 't_start' must lie in [0, 1]")
    return x, t


def imdm(
    model,
    settings: SamplerSettings | None = None,
    /,
    *,
    fix_eps: bool = False,
    mdlm_posterior: bool = False,
    eps_seeds: torch.Tensor | None = None,
    x_start: torch.Tensor | None = None,
    t_start: torch.Tensor | None = None,
    last_step: str = "ancestral",
    cache: bool = True,
    **options,
) -> SampleResult:
    """IMDM ancestral sampling (see the module docstring for the chain and its draws).

    ``model``: an IMDM backbone (:class:`mdfast.diffusion.IMDMBackbone`, or anything with a
    ``noise_dim`` attribute and ``hidden(x, eps=ε)`` + ``head(rows)`` or ``model(x, eps=ε)``), or a
    plain MDLM denoiser (no ε: the sampler is then MDLM's chain with this time grid).

    ``settings`` / ``options``: the common sampler options of
    :class:`~mdfast.sampling.settings.SamplerSettings` (default schedule ``"loglinear"``).
    ``eps_seeds``: int64 [batch_size] ε seeds in [0, 2^31) (default :func:`default_eps_seeds`);
    equal seeds give equal ε. ``x_start`` / ``t_start``: start from a partly masked batch at
    per-sample times (default: all-mask, or the ``prefix`` kept fixed, at t = 1).
    ``noise_removal=False`` leaves the positions still masked at the end as they are
    (``last_step`` then does not apply). ``cache=False`` calls the denoiser every step (the same
    samples, for testing the cache). Token draws, unmask events and redraw events come from Philox
    streams of ``seed``: the same seed and ε seeds give the same samples; with ``sample_index``
    (the settings' global sample indices) each sample draws on its own keyed stream
    (:class:`mdfast.rng.SampleCursor`) and its default ε seed is keyed by its index, so a
    sample does not depend on the batch it is drawn in.
    """
    st = settings_for("imdm", settings, options)
    for name, value in (("fix_eps", fix_eps), ("mdlm_posterior", mdlm_posterior),
                        ("cache", cache)):  # fmt: skip
        if not isinstance(value, bool):
            raise ValueError(f"mdfast: argument '{name}' must be a bool, got {value!r}")
    if last_step not in _LAST_STEPS:
        raise ValueError(f"mdfast: argument 'last_step' must be one of {_LAST_STEPS}, got "
                         f"{last_step!r}")  # fmt: skip
    batch_size, length, mask_index, steps = st.batch_size, st.length, st.mask_index, st.steps
    x, t0 = _start(x_start, t_start, st)
    dev = x.device
    noise_dim = getattr(model, "noise_dim", None)
    den = _EpsDenoiser(model, False)
    rng = _cursor(st)
    keyed = isinstance(rng, SampleCursor)
    if keyed and t0 is not None:
        raise ValueError("mdfast: argument 't_start' cannot be combined with 'sample_index'")
    redraw_rng = PhiloxStream(stream_seed(st.seed, Purpose.REVERSE, "imdm-redraw"))
    alphas = _alphas(steps, st.schedule or "loglinear", st.eps, t0, batch_size, dev)
    ancestral_end = st.noise_removal and last_step == "ancestral"
    if ancestral_end:
        alphas[-1] = 1.0
    eps_now = None
    if noise_dim is not None:
        if eps_seeds is None:
            index = st.sample_index if keyed else batch_size
            eps_seeds = default_eps_seeds(st.seed, index, dev)
        eps_seeds = torch.as_tensor(eps_seeds, device=dev)
        if tuple(eps_seeds.shape) != (batch_size,):
            raise ValueError(
                f"mdfast: argument 'eps_seeds' must have shape [batch_size] = [{batch_size}], "
                f"got {list(eps_seeds.shape)}"
            )
        eps_of = _eps_source(model, noise_dim)
        eps_now = eps_of(eps_seeds, length)
    redraws = eps_now is not None and not (fix_eps or mdlm_posterior)
    out = None
    for k in range(steps):
        a_t, a_s = alphas[k], alphas[k + 1]
        if out is None:
            out = den(x, eps_now)
        masked = x == mask_index
        with _nvtx("sample"):
            # keyed: one alpha for the batch (no t_start), and a draw every step so that a
            # sample's offsets never depend on the others
            at, as_ = (float(a_t[0]), float(a_s[0])) if keyed else (a_t, a_s)
            x_next, changed, _ = _mask_step(x, None, st, rng, alpha_t=at, alpha_s=as_)
            rows = (changed & masked).reshape(-1).nonzero()[:, 0]
            if rows.numel() or keyed:
                _draw_rows(den, out, x_next, rows, st, rng)
        touched = bool(changed.any())
        if redraws:
            stay = masked & ~changed
            u = None
            if keyed:
                u = rng.next().uniform(rng.purpose, length, device=dev)
            elif bool(stay.any()):
                u = ops.uniform(x.shape, *redraw_rng.next(), device=dev)
            if u is not None:
                redraw = stay & (u < redraw_probability(a_t, a_s)[:, None])
                hit = redraw.any(dim=1).nonzero()[:, 0]
                if hit.numel():
                    fresh = eps_of(eps_seeds[hit], length, step=k + 1)
                    eps_now[hit] = torch.where(redraw[hit, :, None], fresh.to(eps_now.dtype),
                                               eps_now[hit])  # fmt: skip
                    touched = True
        if touched or not cache:
            out = None
        x = x_next
    if st.noise_removal and not ancestral_end and bool((x == mask_index).any()):
        if out is None:
            out = den(x, eps_now)
        _noise_removal(den, out, x, 0.0, st, rng)
    return SampleResult(x, den.calls, steps, den.sequences)


def _eps_source(model, noise_dim: int):
    """``(seeds, length, step=0) -> ε``: the model's own seeded ε (its scale) or the unit one."""
    if hasattr(model, "eps_from_seeds"):
        return model.eps_from_seeds
    return lambda seeds, length, step=0: seeded_eps(seeds, length, noise_dim, step=step)
