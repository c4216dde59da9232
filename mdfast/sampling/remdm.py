"""ReMDM remasking samplers (cap, rescale, conf, loop) and the forward-backward and DFM
correctors, as step plans run by the shared chain."""

from __future__ import annotations

from mdfast.sampling import remask_rates
from mdfast.sampling.chain import SampleResult, _chain, _grid, _noise_removal, _start
from mdfast.sampling.settings import (
    LOOP_DEFAULTS,
    REMDM_DEFAULTS,
    REMDM_STRATEGIES,
    SamplerSettings,
    settings_for,
)
from mdfast.schedules import alpha_at

__all__ = ["LOOP_DEFAULTS", "REMDM_DEFAULTS", "remdm", "remdm_plan"]

REMDM_OPTIONS = ("strategy", "eta", "t_on", "t_off", "alpha_on", "time_conditioned",
                 "per_row_cache")  # fmt: skip


def remdm(model, settings: SamplerSettings | None = None, /, **options) -> SampleResult:
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
    st = settings_for("remdm", settings, options, *REMDM_OPTIONS)
    tc = bool(st.time_conditioned)
    den, rng, x, fixed = _start(model, st, tc)
    plan = remdm_plan(
        st.strategy,
        st.steps,
        eta=st.remdm_eta,
        t_on=st.t_on,
        t_off=st.t_off,
        alpha_on=st.alpha_on,
        eps=st.eps,
    )
    x, out = _chain(
        den,
        x,
        plan,
        st=st,
        rng=rng,
        cache=not tc,
        fixed=fixed,
        conf_mode=st.strategy == "conf",
        per_row=st.per_row_cache,
    )
    if st.noise_removal:
        _noise_removal(den, out, x, plan[-1][1], st, rng)
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
    if strategy not in REMDM_STRATEGIES:
        raise ValueError(
            f"mdfast: argument 'strategy' must be one of {', '.join(REMDM_STRATEGIES)}, "
            f"got {strategy!r}"
        )
    if eta is None:
        eta = REMDM_DEFAULTS.get(strategy, 0.0)
    alpha = alpha_at
    plan = []
    if strategy == "dfm":
        t = 1.0
        dt = 1.0 / steps
        plan.append((t, t - dt, 0.0, alpha(t - dt, "linear"), None))
        t -= dt
        while t > dt:
            dt, b = remask_rates.dfm_step(t, steps)
            s = max(t - dt, 0.0)
            a_t, a_s = alpha(t, "linear"), alpha(s, "linear")
            plan.append((t, s, a_t, a_s, min(1.0, b * (a_s - a_t) / a_t)))
            t = s
    else:
        grid = _grid(steps, eps)
        for t, s in grid:
            if strategy == "loop":
                a_t = remask_rates.loop_alpha(t, t_on, t_off, alpha_on)
                a_s = max(a_t, remask_rates.loop_alpha(s, t_on, t_off, alpha_on))
                # the loop phase remasks at eta, capped at sigma_max on the step that leaves it
                sigma = min(eta, remask_rates.sigma_max(a_t, a_s)) if t_off < t <= t_on else None
            else:
                a_t, a_s = alpha(t, "linear"), alpha(s, "linear")
                if strategy == "cap":
                    sigma = remask_rates.sigma_cap(a_t, a_s, eta)
                elif strategy == "rescale":
                    sigma = remask_rates.sigma_rescale(a_t, a_s, eta)
                elif strategy == "conf":
                    sigma = remask_rates.sigma_max(a_t, a_s)
                else:
                    sigma = remask_rates.sigma_forward_backward(a_t, a_s)
            plan.append((t, s, a_t, a_s, sigma))
    return plan
