"""Samplers of masked diffusion models (MDLM, ReMDM, SEDD-absorbing) built on the fused ops.

Every sampler takes a denoiser ``model`` — ``model(x) -> logits [B, L, V]`` (``model(x, t)``
with ``time_conditioned=True``), or an object with ``hidden(x) -> h [B, L, D]`` and
``head(h_rows [R, D]) -> logits [R, V]`` so that logits are computed only for the rows that
change — and returns a :class:`SampleResult` with the samples, the number of denoiser calls and
of steps taken. The same ``seed`` gives the same samples: all randomness comes from the Philox
streams of :func:`mdfast.ops.mask_step`, :func:`mdfast.ops.sample_x0` and
:func:`mdfast.ops.uniform`, one offset per op call from a :class:`mdfast.rng.PhiloxStream` of
``seed``. ``schedule`` is a name of :func:`mdfast.schedules.get_schedule` or a schedule object.

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
* :func:`semi_ar` — semi-autoregressive generation; ``prefix=`` conditions any sampler on fixed
  leading tokens (carry-over keeps them; remasking never touches them).

Set ``MDFAST_NVTX=1`` to wrap the phases in NVTX ranges (``denoise``, ``cache.reuse``,
``sample``, ``remask``) for Nsight Systems.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass

import torch

from mdfast import ops
from mdfast.rng import PhiloxStream
from mdfast.sampling import schedules

__all__ = [
    "SampleResult",
    "analytic",
    "ddpm",
    "ddpm_cache",
    "first_hitting",
    "grid_plan",
    "remdm",
    "remdm_plan",
    "sample",
    "schedules",
    "semi_ar",
]

REMDM_DEFAULTS = {"cap": 0.008, "rescale": 0.015, "loop": 0.02}
LOOP_DEFAULTS = {"t_on": 0.55, "t_off": 0.05, "alpha_on": 0.9}


@dataclass
class SampleResult:
    """Samples ``x`` [B, L] (int64), denoiser calls ``nfe``, reverse steps taken ``steps``, and
    ``sequences``: the sequences the denoiser evaluated over all calls (< nfe * B when a
    per-row cache refreshes only the rows that changed)."""

    x: torch.Tensor
    nfe: int
    steps: int
    sequences: int = 0


def _rng_kw(rng: PhiloxStream) -> dict:
    seed, offset = rng.next()
    return {"seed": seed, "offset": offset}


def _nvtx(name: str):
    if os.environ.get("MDFAST_NVTX") == "1" and torch.cuda.is_available():
        return torch.cuda.nvtx.range(name)
    return contextlib.nullcontext()


class _Denoiser:
    """Calls the model (full logits, or hidden states + output head) and counts the calls."""

    def __init__(self, model, time_conditioned: bool):
        self.model = model
        self.time_conditioned = time_conditioned
        self.split = hasattr(model, "hidden") and hasattr(model, "head")
        self.calls = 0
        self.sequences = 0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Logits [B, L, V], or hidden states [B, L, D] in split mode."""
        self.calls += 1
        self.sequences += x.shape[0]
        with _nvtx("denoise"):
            fn = self.model.hidden if self.split else self.model
            if self.time_conditioned:
                return fn(x, torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device))
            return fn(x)

    def rows(self, out: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logits [R, V] of flattened positions ``rows`` from a call's output."""
        flat = out.reshape(-1, out.shape[-1])[rows]
        return self.model.head(flat) if self.split else flat


@dataclass
class _Opts:
    mask_index: int
    temperature: float
    top_p: float
    top_k: int
    nucleus: str


def _init_x(batch_size, length, mask_index, prefix, device) -> tuple[torch.Tensor, int]:
    x = torch.full((batch_size, length), mask_index, dtype=torch.int64, device=device)
    if prefix is None:
        return x, 0
    prefix = torch.as_tensor(prefix, dtype=torch.int64, device=device)
    if prefix.dim() == 1:
        prefix = prefix.expand(batch_size, -1)
    P = prefix.shape[1]
    if P > length or prefix.shape[0] != batch_size:
        raise ValueError(
            "mdfast: argument 'prefix' must be [P] or [B, P] with P <= length, "
            f"got {list(prefix.shape)}"
        )
    if bool((prefix == mask_index).any()):
        raise ValueError("mdfast: argument 'prefix' must not contain the mask id")
    x[:, :P] = prefix
    return x, P


def _draw_rows(den, out, x, rows, opts, rng, conf=None):
    """Draw x0 for flattened positions ``rows`` of x (in place) from a denoiser output."""
    logits = den.rows(out, rows)
    tok, prob = ops.sample_x0(
        logits,
        None,
        temperature=opts.temperature,
        top_p=opts.top_p,
        top_k=opts.top_k,
        exclude_index=opts.mask_index,
        nucleus=opts.nucleus,
        **_rng_kw(rng),
    )
    x.view(-1)[rows] = tok
    if conf is not None:
        conf.view(-1)[rows] = -prob


def _noise_removal(den, out, x, t_final, opts, rng, sample: bool = False):
    """MDLM's final step: every position still masked takes the argmax of its x0 distribution
    (SEDD's denoiser step samples it instead)."""
    rows = (x == opts.mask_index).reshape(-1).nonzero()[:, 0]
    if rows.numel() == 0:
        return out
    if out is None:
        out = den(x, t_final)
    logits = den.rows(out, rows)
    tok, _ = ops.sample_x0(
        logits,
        None,
        temperature=opts.temperature if sample else 0.0,
        top_p=opts.top_p,
        top_k=opts.top_k,
        exclude_index=opts.mask_index,
        nucleus=opts.nucleus,
        **_rng_kw(rng),
    )
    x.view(-1)[rows] = tok
    return out


def _chain(den, x, plan, *, opts, rng, cache, prefix_len, conf_mode=False, per_row=False):
    """Run reverse steps ``plan`` = [(t, s, alpha_t, alpha_s, sigma)] with sigma None (MDLM),
    a float, or (conf_mode) sigma_max of ReMDM-conf. Returns (x, last denoiser output or None).
    ``per_row``: refresh the cached output only for the batch rows whose x changed (written in
    place into the denoiser's previous output)."""
    out = None
    stale = None  # per_row: batch rows whose cached output is out of date
    conf = None
    if conf_mode:
        conf = torch.full(x.shape, float("-inf"), dtype=torch.float32, device=x.device)
    for t, _s, a_t, a_s, sigma in plan:
        reuse = out is not None and stale is None
        if out is None:
            out = den(x, t)
        elif stale is not None:
            idx = stale.nonzero()[:, 0]
            out[idx] = den(x[idx], t)
            stale = None
        remask = sigma
        if conf_mode:
            with _nvtx("remask"):
                w = torch.softmax(conf, dim=1).nan_to_num(0.0)  # rows with nothing decoded: 0
                remask = w.to(torch.float64) * sigma
        if prefix_len and remask is not None:
            remask = torch.as_tensor(remask, dtype=torch.float64, device=x.device)
            remask = remask.expand(x.shape).clone()
            remask[:, :prefix_len] = 0.0
        if remask is not None and not torch.is_tensor(remask) and remask == 0.0:
            remask = None
        with _nvtx("cache.reuse" if reuse else "sample"):
            if den.split:
                x_next, changed, conf_new = ops.mask_step(
                    x,
                    None,
                    mask_index=opts.mask_index,
                    alpha_t=a_t,
                    alpha_s=a_s,
                    remask=remask,
                    confidence=conf,
                    **_rng_kw(rng),
                )
                rows = (changed & (x == opts.mask_index)).reshape(-1).nonzero()[:, 0]
                if rows.numel():
                    _draw_rows(den, out, x_next, rows, opts, rng, conf_new if conf_mode else None)
            else:
                x_next, changed, conf_new = ops.mask_step(
                    x,
                    out,
                    mask_index=opts.mask_index,
                    alpha_t=a_t,
                    alpha_s=a_s,
                    remask=remask,
                    confidence=conf,
                    temperature=opts.temperature,
                    top_p=opts.top_p,
                    top_k=opts.top_k,
                    nucleus=opts.nucleus,
                    **_rng_kw(rng),
                )
        if conf_mode:
            conf = conf_new
        if not cache:
            out = None
        elif per_row:
            rows_changed = changed.any(dim=1)
            if bool(rows_changed.all()):
                out = None
            elif bool(rows_changed.any()):
                stale = rows_changed
        elif bool(changed.any()):
            out = None
        x = x_next
    if stale is not None:
        out = None
    return x, out


def _grid(steps: int, eps: float) -> list[tuple[float, float]]:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"mdfast: argument 'steps' must be a positive int, got {steps!r}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"mdfast: argument 'eps' must be in (0, 1), got {eps}")
    ts = torch.linspace(1.0, eps, steps + 1, dtype=torch.float64).tolist()
    return list(itertools.pairwise(ts))


def _common(
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
):
    den = _Denoiser(model, time_conditioned)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"mdfast: argument 'seed' must be a non-negative int, got {seed!r}")
    rng = PhiloxStream(seed)
    x, P = _init_x(batch_size, length, mask_index, prefix, device)
    opts = _Opts(mask_index, temperature, top_p, top_k, nucleus)
    return den, rng, x, P, opts


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
    device=None,
) -> SampleResult:
    """MDLM ancestral sampling (D3PM): for each step t -> s, every masked position unmasks with
    probability (alpha_s - alpha_t)/(1 - alpha_t) to a token drawn from the denoiser's x0
    distribution (mask class excluded), decoded positions carry over; one denoiser call per step,
    then (``noise_removal``) the argmax of the remaining masked positions at t = eps."""
    den, rng, x, P, opts = _common(
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
    )
    grid = _grid(steps, eps)
    plan = [
        (t, s, schedules.alpha(t, schedule), schedules.alpha(s, schedule), None) for t, s in grid
    ]
    x, _ = _chain(den, x, plan, opts=opts, rng=rng, cache=False, prefix_len=P)
    if noise_removal:
        _noise_removal(den, None, x, grid[-1][1], opts, rng)
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
    den, rng, x, P, opts = _common(
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
    )
    grid = _grid(steps, eps)
    plan = [
        (t, s, schedules.alpha(t, schedule), schedules.alpha(s, schedule), None) for t, s in grid
    ]
    x, out = _chain(
        den,
        x,
        plan,
        opts=opts,
        rng=rng,
        cache=not time_conditioned,
        prefix_len=P,
        per_row=per_row_cache,
    )
    if noise_removal:
        _noise_removal(den, out, x, grid[-1][1], opts, rng)
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
            logits = den.rows(out, local)
            tok, _ = ops.sample_x0(
                logits,
                None,
                temperature=opts.temperature,
                top_p=opts.top_p,
                top_k=opts.top_k,
                exclude_index=opts.mask_index,
                nucleus=opts.nucleus,
                **_rng_kw(rng),
            )
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
    device=None,
) -> SampleResult:
    """SEDD's analytic sampler for the absorbing graph (see the module docstring: its posterior
    is the ddpm step), time-conditioned by default, ending with SEDD's denoiser step that
    samples every still-masked position from p_theta."""
    den, rng, x, P, opts = _common(
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
    )
    grid = _grid(steps, eps)
    plan = [
        (t, s, schedules.alpha(t, schedule), schedules.alpha(s, schedule), None) for t, s in grid
    ]
    x, out = _chain(den, x, plan, opts=opts, rng=rng, cache=not time_conditioned, prefix_len=P)
    if noise_removal:
        _noise_removal(
            den, out if not time_conditioned else None, x, grid[-1][1], opts, rng, sample=True
        )
    return SampleResult(x, den.calls, len(plan), den.sequences)


def remdm(
    model,
    *,
    batch_size: int,
    length: int,
    mask_index: int,
    steps: int,
    strategy: str = "cap",
    eta: float | None = None,
    t_on: float = LOOP_DEFAULTS["t_on"],
    t_off: float = LOOP_DEFAULTS["t_off"],
    alpha_on: float = LOOP_DEFAULTS["alpha_on"],
    seed: int = 0,
    eps: float = 1e-5,
    noise_removal: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    nucleus: str = "remdm",
    prefix=None,
    time_conditioned: bool = False,
    per_row_cache: bool = False,
    device=None,
) -> SampleResult:
    """ReMDM samplers on MDLM's cached chain with alpha_t = 1 - t. A decoded position remasks
    with probability sigma_t; a masked one unmasks with (alpha_s - (1 - sigma_t) alpha_t) /
    (1 - alpha_t). ``strategy``:

    * ``"cap"``: sigma = min(eta, (1 - alpha_s)/alpha_t), eta = 0.008;
    * ``"rescale"``: sigma = eta * min(1, (1 - alpha_s)/alpha_t), eta = 0.015;
    * ``"conf"``: sigma_i = softmax over positions of conf (-p of each decoded token, -inf for
      masked ones) times sigma_max = min(1, (1 - alpha_s)/alpha_t);
    * ``"loop"``: MDLM up to alpha_on at t_on, a loop at constant alpha = alpha_on with sigma = eta
      until t_off, MDLM to the end; (t_on, t_off, alpha_on, eta) = (0.55, 0.05, 0.9, 0.02)
      (on a coarse grid the step leaving the loop caps sigma at sigma_max, keeping it valid);
    * ``"fb"``: forward-backward corrector, sigma = (alpha_s - alpha_t)/alpha_t;
    * ``"dfm"``: DFM corrector with the adaptive step dt = min(1/T, 1/(a_t/t + b_t/(1 - t))),
      a_t = 10 t^(1/4) (1 - t)^(1/4) + 1, b_t = a_t - 1; masked positions decode with
      a_t (alpha_s - alpha_t)/(1 - alpha_t) and decoded ones remask with b_t (alpha_s/alpha_t - 1),
      i.e. sigma = b_t (alpha_s - alpha_t)/alpha_t in the ReMDM form; the first step is a plain
      MDLM step and the loop runs while t > dt (so the number of steps differs from T).

    sigma is clamped to [0, 1] and the unmask probability to [0, 1] where a strategy leaves
    ReMDM's valid range. ``per_row_cache`` as in :func:`ddpm_cache`."""
    if strategy not in ("cap", "rescale", "conf", "loop", "fb", "dfm"):
        raise ValueError(
            "mdfast: argument 'strategy' must be one of cap, rescale, conf, loop, fb, dfm, "
            f"got {strategy!r}"
        )
    if eta is None:
        eta = REMDM_DEFAULTS.get(strategy, 0.0)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"mdfast: argument 'eta' must be in [0, 1], got {eta}")
    den, rng, x, P, opts = _common(
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
    )
    plan = remdm_plan(strategy, steps, eta=eta, t_on=t_on, t_off=t_off, alpha_on=alpha_on, eps=eps)
    grid_end = plan[-1][1]
    x, out = _chain(
        den,
        x,
        plan,
        opts=opts,
        rng=rng,
        cache=not time_conditioned,
        prefix_len=P,
        conf_mode=strategy == "conf",
        per_row=per_row_cache,
    )
    if noise_removal:
        _noise_removal(den, out, x, grid_end, opts, rng)
    return SampleResult(x, den.calls, len(plan), den.sequences)


def remdm_plan(
    strategy: str,
    steps: int,
    *,
    eta: float | None = None,
    t_on: float = LOOP_DEFAULTS["t_on"],
    t_off: float = LOOP_DEFAULTS["t_off"],
    alpha_on: float = LOOP_DEFAULTS["alpha_on"],
    eps: float = 1e-5,
) -> list[tuple[float, float, float, float, float | None]]:
    """The steps (t, s, alpha_t, alpha_s, sigma) :func:`remdm` takes for ``strategy`` (for
    ``"conf"``, sigma is sigma_max, spread over positions by confidence at run time)."""
    if eta is None:
        eta = REMDM_DEFAULTS.get(strategy, 0.0)
    alpha = schedules.alpha
    plan = []
    if strategy == "dfm":
        t = 1.0
        dt = 1.0 / steps
        plan.append((t, t - dt, 0.0, alpha(t - dt, "linear"), None))
        t -= dt
        while t > dt:
            dt, b = schedules.dfm_step(t, steps)
            s = max(t - dt, 0.0)
            a_t, a_s = alpha(t, "linear"), alpha(s, "linear")
            plan.append((t, s, a_t, a_s, min(1.0, b * (a_s - a_t) / a_t)))
            t = s
    else:
        grid = _grid(steps, eps)
        for t, s in grid:
            if strategy == "loop":
                a_t = schedules.loop_alpha(t, t_on, t_off, alpha_on)
                a_s = max(a_t, schedules.loop_alpha(s, t_on, t_off, alpha_on))
                # the loop phase remasks at eta, capped at sigma_max on the step that leaves it
                sigma = min(eta, schedules.sigma_max(a_t, a_s)) if t_off < t <= t_on else None
            else:
                a_t, a_s = alpha(t, "linear"), alpha(s, "linear")
                if strategy == "cap":
                    sigma = schedules.sigma_cap(a_t, a_s, eta)
                elif strategy == "rescale":
                    sigma = schedules.sigma_rescale(a_t, a_s, eta)
                elif strategy == "conf":
                    sigma = schedules.sigma_max(a_t, a_s)
                else:
                    sigma = schedules.sigma_forward_backward(a_t, a_s)
            plan.append((t, s, a_t, a_s, sigma))
    return plan


def grid_plan(steps: int, schedule: str, eps: float = 1e-5):
    """The steps (t, s, alpha_t, alpha_s, None) of the MDLM chain on linspace(1, eps, T + 1)."""
    return [
        (t, s, schedules.alpha(t, schedule), schedules.alpha(s, schedule), None)
        for t, s in _grid(steps, eps)
    ]


_SAMPLERS = {
    "ddpm": ddpm,
    "ddpm_cache": ddpm_cache,
    "first_hitting": first_hitting,
    "analytic": analytic,
}


def sample(model, *, sampler: str = "ddpm_cache", **kwargs) -> SampleResult:
    """Dispatch by name: ``ddpm``, ``ddpm_cache``, ``first_hitting``, ``analytic``, or
    ``remdm-<strategy>`` (cap, rescale, conf, loop, fb, dfm) as in ReMDM's ``sampling.sampler``."""
    if sampler.startswith("remdm-"):
        return remdm(model, strategy=sampler[len("remdm-") :], **kwargs)
    if sampler not in _SAMPLERS:
        raise ValueError(f"mdfast: argument 'sampler' unknown: {sampler!r}")
    return _SAMPLERS[sampler](model, **kwargs)


def semi_ar(
    model,
    *,
    batch_size: int,
    length: int,
    mask_index: int,
    stride_length: int,
    num_strides: int,
    sampler: str = "ddpm_cache",
    seed: int = 0,
    **kwargs,
) -> SampleResult:
    """Semi-autoregressive generation (MDLM ``sample_subs_guidance``): sample a window of
    ``length`` tokens, then ``num_strides`` times slide it by ``stride_length``: the new window's
    first length - stride tokens are the previous window's tail (a fixed prefix), the rest is
    sampled. Output length = length + num_strides * stride_length. Each window uses its own seed
    (seed + window index)."""
    if not 0 < stride_length <= length:
        raise ValueError(
            f"mdfast: argument 'stride_length' must be in (0, length], got {stride_length}"
        )
    res = sample(
        model,
        sampler=sampler,
        batch_size=batch_size,
        length=length,
        mask_index=mask_index,
        seed=seed,
        **kwargs,
    )
    pieces, nfe, steps, seqs, x = [res.x], res.nfe, res.steps, res.sequences, res.x
    for k in range(num_strides):
        r = sample(
            model,
            sampler=sampler,
            batch_size=batch_size,
            length=length,
            mask_index=mask_index,
            seed=seed + k + 1,
            prefix=x[:, stride_length:],
            **kwargs,
        )
        pieces.append(r.x[:, length - stride_length :])
        nfe, steps, seqs, x = nfe + r.nfe, steps + r.steps, seqs + r.sequences, r.x
    return SampleResult(torch.cat(pieces, dim=1), nfe, steps, seqs)
