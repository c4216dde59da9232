"""MDLM's ancestral samplers (ddpm, ddpm_cache), the first-hitting sampler and SEDD's analytic
sampler for the absorbing graph; the math is in the :mod:`mdfast.sampling` docstring."""

from __future__ import annotations

import torch

from mdfast import ops
from mdfast.sampling import keyed, schedules
from mdfast.sampling.chain import (
    SampleResult,
    _chain,
    _common,
    _grid,
    _noise_removal,
    _nvtx,
    _rng_kw,
    grid_plan,
)


def ddpm(
    model,
    *,
    batch_size: int,
    length: int,
    mask_index: int,
    steps: int,
    seed: int = 0,
    schedule: str = "loglinear",
    eps: float = 1e-5,
    noise_removal: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    nucleus: str = "remdm",
    prefix=None,
    time_conditioned: bool = False,
    sample_index=None,
    device=None,
) -> SampleResult:
    """MDLM ancestral sampling (D3PM): for each step t -> s, every masked position unmasks with
    probability (alpha_s - alpha_t)/(1 - alpha_t) to a token drawn from the denoiser's x0
    distribution (mask class excluded), decoded positions carry over; one denoiser call per step,
    then (``noise_removal``) the argmax of the remaining masked positions at t = eps."""
    den, rng, x, fixed, opts = _common(
        model,
        batch_size,
        length,
        mask_index,
        prefix,
        device,
        seed,
        time_conditioned,
        temperature,
        top_p,
        top_k,
        nucleus,
        sample_index,
    )
    plan = grid_plan(steps, schedule, eps)
    x, _ = _chain(den, x, plan, opts=opts, rng=rng, cache=False, fixed=fixed)
    if noise_removal:
        _noise_removal(den, None, x, plan[-1][1], opts, rng)
    return SampleResult(x, den.calls, len(plan), den.sequences)


def ddpm_cache(
    model,
    *,
    batch_size: int,
    length: int,
    mask_index: int,
    steps: int,
    seed: int = 0,
    schedule: str = "linear",
    eps: float = 1e-5,
    noise_removal: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    nucleus: str = "remdm",
    prefix=None,
    time_conditioned: bool = False,
    per_row_cache: bool = False,
    sample_index=None,
    device=None,
) -> SampleResult:
    """MDLM's cached sampler: the ddpm chain, calling the denoiser only when x changed since the
    last call (every step if ``time_conditioned``). ``schedule="linear"`` is MDLM's cache
    variant (alpha_t = 1 - t); ``"loglinear"`` reproduces :func:`ddpm`'s chain exactly. The
    cache is the denoiser output for the current x (not a B x L x V probability tensor); a cached
    step reads only the logits rows of positions that unmask. For B = 1 the expected number of
    calls is about T (1 - exp(-L / T)). ``per_row_cache=True`` (KV-free, per sequence) re-runs
    the denoiser only on the batch rows whose x changed and writes them into its previous output
    (the denoiser must treat batch rows independently and return a fresh tensor)."""
    den, rng, x, fixed, opts = _common(
        model,
        batch_size,
        length,
        mask_index,
        prefix,
        device,
        seed,
        time_conditioned,
        temperature,
        top_p,
        top_k,
        nucleus,
        sample_index,
    )
    plan = grid_plan(steps, schedule, eps)
    x, out = _chain(
        den,
        x,
        plan,
        opts=opts,
        rng=rng,
        cache=not time_conditioned,
        fixed=fixed,
        per_row=per_row_cache,
    )
    if noise_removal:
        _noise_removal(den, out, x, plan[-1][1], opts, rng)
    return SampleResult(x, den.calls, len(plan), den.sequences)


def first_hitting(
    model,
    *,
    batch_size: int,
    length: int,
    mask_index: int,
    steps: int,
    seed: int = 0,
    schedule: str = "linear",
    eps: float = 1e-5,
    noise_removal: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    nucleus: str = "remdm",
    prefix=None,
    sample_index=None,
    device=None,
) -> SampleResult:
    """First-hitting sampler: the :func:`ddpm_cache` chain on the same grid and schedule, in
    distribution, jumping from one change event to the next (see the module docstring for the
    inverse-survival draw and why it is exact). The denoiser is called once per distinct event
    step, on the sequences with an event at that step only (``sequences`` in the result counts
    them); ``steps`` only sets the grid. Not for time-conditioned denoisers."""
    den, rng, x, _, opts = _common(
        model,
        batch_size,
        length,
        mask_index,
        prefix,
        device,
        seed,
        False,
        temperature,
        top_p,
        top_k,
        nucleus,
        sample_index,
    )
    grid = _grid(steps, eps)
    times = [grid[0][0]] + [s for _, s in grid]
    m = torch.tensor(
        [1.0 - schedules.alpha(t, schedule) for t in times], dtype=torch.float64, device=x.device
    )
    m_rev = m.flip(0).contiguous()
    T = len(grid)
    L = x.shape[1]
    # Every masked position's unmask step, drawn once: positions never remask and the event
    # times do not depend on the tokens, only the draws at each event do.
    pos = (x == mask_index).reshape(-1).nonzero()[:, 0]
    if opts.seeds is None:
        u = ops.uniform((pos.numel(),), *rng.next(), device=x.device)
    else:  # keyed: sample b's uniforms from its stream, and event step k draws at offset base + k
        _, off = rng.next()
        u = torch.stack([ops.uniform((L,), s, off, device=x.device) for s in opts.seeds])
        u = u.reshape(-1)[pos]
        _, base = rng.next(T)
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
            logits = den.rows(out, local)
            if opts.seeds is None:
                tok, _ = ops.sample_x0(logits, None, **opts.draw(), **_rng_kw(rng))
            else:
                tok, _ = keyed.sample_rows(logits, fire // L, opts.seeds, base + step - 1,
                                           **opts.draw())  # fmt: skip
            x.view(-1)[fire] = tok
        events += 1
    out = None
    if noise_removal:
        _noise_removal(den, out, x, times[-1], opts, rng)
    return SampleResult(x, den.calls, events, den.sequences)


def analytic(
    model,
    *,
    batch_size: int,
    length: int,
    mask_index: int,
    steps: int,
    seed: int = 0,
    schedule: str = "loglinear",
    eps: float = 1e-5,
    noise_removal: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    nucleus: str = "remdm",
    prefix=None,
    time_conditioned: bool = True,
    sample_index=None,
    device=None,
) -> SampleResult:
    """SEDD's analytic sampler for the absorbing graph (see the module docstring: its posterior
    is the ddpm step), time-conditioned by default, ending with SEDD's denoiser step that
    samples every still-masked position from p_theta."""
    den, rng, x, fixed, opts = _common(
        model,
        batch_size,
        length,
        mask_index,
        prefix,
        device,
        seed,
        time_conditioned,
        temperature,
        top_p,
        top_k,
        nucleus,
        sample_index,
    )
    plan = grid_plan(steps, schedule, eps)
    x, out = _chain(den, x, plan, opts=opts, rng=rng, cache=not time_conditioned, fixed=fixed)
    if noise_removal:
        _noise_removal(
            den, out if not time_conditioned else None, x, plan[-1][1], opts, rng, sample=True
        )
    return SampleResult(x, den.calls, len(plan), den.sequences)
