"""MDLM's ancestral samplers (ddpm, ddpm_cache), the first-hitting sampler and SEDD's analytic
sampler for the absorbing graph; the math is in the :mod:`mdfast.sampling` docstring.

Each takes a :class:`~mdfast.sampling.settings.SamplerSettings` or its options as keywords
(``batch_size``, ``length``, ``mask_index``, ``steps``, ``seed``, ``schedule``, ``eps``,
``noise_removal``, ``temperature``, ``top_p``, ``top_k``, ``nucleus``, ``prefix``,
``sample_index``, ``device``,
plus ``time_conditioned`` / ``per_row_cache`` where a sampler reads them).
"""

from __future__ import annotations

import torch

from mdfast import ops
from mdfast.rng import SampleCursor
from mdfast.sampling.chain import (
    SampleResult,
    _chain,
    _grid,
    _noise_removal,
    _nvtx,
    _start,
    grid_plan,
    sample_x0_rows,
)
from mdfast.sampling.settings import SamplerSettings, settings_for
from mdfast.schedules import alpha_at


def ddpm(model, settings: SamplerSettings | None = None, /, **options) -> SampleResult:
    """MDLM ancestral sampling (D3PM): for each step t -> s, every masked position unmasks with
    probability (alpha_s - alpha_t)/(1 - alpha_t) to a token drawn from the denoiser's x0
    distribution (mask class excluded), decoded positions carry over; one denoiser call per step,
    then (``noise_removal``) the argmax of the remaining masked positions at t = eps. Default
    schedule ``"loglinear"``; reads ``time_conditioned`` (default False)."""
    st = settings_for("ddpm", settings, options, "time_conditioned")
    den, rng, x, fixed = _start(model, st, bool(st.time_conditioned))
    plan = grid_plan(st.steps, st.schedule or "loglinear", st.eps)
    x, _ = _chain(den, x, plan, st=st, rng=rng, cache=False, fixed=fixed)
    if st.noise_removal:
        _noise_removal(den, None, x, plan[-1][1], st, rng)
    return SampleResult(x, den.calls, len(plan), den.sequences)


def ddpm_cache(model, settings: SamplerSettings | None = None, /, **options) -> SampleResult:
    """MDLM's cached sampler: the ddpm chain, calling the denoiser only when x changed since the
    last call (every step if ``time_conditioned``). ``schedule="linear"`` (default) is MDLM's
    cache variant (alpha_t = 1 - t); ``"loglinear"`` reproduces :func:`ddpm`'s chain exactly. The
    cache is the denoiser output for the current x (not a B x L x V probability tensor); a cached
    step reads only the logits rows of positions that unmask. For B = 1 the expected number of
    calls is about T (1 - exp(-L / T)). ``per_row_cache=True`` (KV-free, per sequence) re-runs
    the denoiser only on the batch rows whose x changed and writes them into its previous output
    (the denoiser must treat batch rows independently and return a fresh tensor)."""
    st = settings_for("ddpm_cache", settings, options, "time_conditioned", "per_row_cache")
    tc = bool(st.time_conditioned)
    den, rng, x, fixed = _start(model, st, tc)
    plan = grid_plan(st.steps, st.schedule or "linear", st.eps)
    x, out = _chain(
        den, x, plan, st=st, rng=rng, cache=not tc, fixed=fixed, per_row=st.per_row_cache
    )
    if st.noise_removal:
        _noise_removal(den, out, x, plan[-1][1], st, rng)
    return SampleResult(x, den.calls, len(plan), den.sequences)


def first_hitting(model, settings: SamplerSettings | None = None, /, **options) -> SampleResult:
    """First-hitting sampler: the :func:`ddpm_cache` chain on the same grid and schedule
    (default ``"linear"``), in distribution, jumping from one change event to the next (see the
    module docstring for the inverse-survival draw and why it is exact). The denoiser is called
    once per distinct event step, on the sequences with an event at that step only
    (``sequences`` in the result counts them); ``steps`` only sets the grid. Not for
    time-conditioned denoisers."""
    st = settings_for("first_hitting", settings, options)
    if st.time_conditioned:
        raise ValueError("mdfast: first_hitting does not support 'time_conditioned' denoisers")
    den, rng, x, _ = _start(model, st, False)
    schedule = st.schedule or "linear"
    grid = _grid(st.steps, st.eps)
    times = [grid[0][0]] + [s for _, s in grid]
    m = torch.tensor(
        [1.0 - alpha_at(t, schedule) for t in times], dtype=torch.float64, device=x.device
    )
    m_rev = m.flip(0).contiguous()
    T = len(grid)
    L = x.shape[1]
    # Every masked position's unmask step, drawn once: positions never remask and the event
    # times do not depend on the tokens, only the draws at each event do.
    pos = (x == st.mask_index).reshape(-1).nonzero()[:, 0]
    keyed = isinstance(rng, SampleCursor)
    if keyed:  # sample b's uniforms on its key; event step j draws at step base + j - 1
        u = rng.next().uniform(rng.purpose, L, device=x.device).reshape(-1)[pos]
        base = rng.next(T).step
    else:
        u = ops.uniform((pos.numel(),), *rng.next(), device=x.device)
    j = T + 1 - torch.searchsorted(m_rev, u * m[0], side="left")  # first j: m_j < u m_0
    fires = j <= T
    pos, j = pos[fires], j[fires]
    order = torch.argsort(j, stable=True)
    pos, j = pos[order], j[order]
    step_ids, counts = torch.unique_consecutive(j, return_counts=True)
    events = 0
    for step, fire in zip(step_ids.tolist(), pos.split(counts.tolist()), strict=True):
        # the denoiser runs only on the sequences with an event at this step
        seqs = torch.unique(fire // L)
        out = den(x[seqs], times[step - 1])
        local = torch.searchsorted(seqs, fire // L) * L + fire % L
        with _nvtx("sample"):
            key = rng.at(base + step - 1) if keyed else None
            tok, _ = sample_x0_rows(den.rows(out, local), fire, L, st, rng, key=key)
            x.view(-1)[fire] = tok
        events += 1
    if st.noise_removal:
        _noise_removal(den, None, x, times[-1], st, rng)
    return SampleResult(x, den.calls, events, den.sequences)


def analytic(model, settings: SamplerSettings | None = None, /, **options) -> SampleResult:
    """SEDD's analytic sampler for the absorbing graph (see the module docstring: its posterior
    is the ddpm step), time-conditioned by default, ending with SEDD's denoiser step that
    samples every still-masked position from p_theta. Default schedule ``"loglinear"``."""
    st = settings_for("analytic", settings, options, "time_conditioned")
    tc = True if st.time_conditioned is None else st.time_conditioned
    den, rng, x, fixed = _start(model, st, tc)
    plan = grid_plan(st.steps, st.schedule or "loglinear", st.eps)
    x, out = _chain(den, x, plan, st=st, rng=rng, cache=not tc, fixed=fixed)
    if st.noise_removal:
        _noise_removal(den, out if not tc else None, x, plan[-1][1], st, rng, sample=True)
    return SampleResult(x, den.calls, len(plan), den.sequences)
