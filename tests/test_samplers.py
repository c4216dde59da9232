"""Samplers end to end against exact laws.

A small known joint distribution (L = 3 positions, 4 tokens, mask id 4) and an exact denoiser
(the true conditional of each masked position given the visible ones). The exact law of each
sampler's Markov chain on its time grid — per step, given the state, every masked position
unmasks independently with probability q to a token from its conditional and every decoded one
remasks with probability sigma; then the final noise-removal map — is propagated over the 125
states, and the sampled sequences are chi-square tested against it (cells with expected count
>= 5; false-failure probability 1e-7 per test). Few steps are used on purpose: several positions
then unmask in one step, so the chain's law differs visibly from the data law and a sampler that
followed a different chain would fail.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from mdfast import baselines, ops, sampling
from mdfast.sampling import remask_rates

L, K, MASK = 3, 4, 4
V = K + 1
P_FAIL = 1e-7
N = 60_000


def _table(product: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    if product:
        marg = torch.rand(L, K, generator=g, dtype=torch.float64) + 0.2
        marg /= marg.sum(1, keepdim=True)
        return torch.einsum("a,b,c->abc", marg[0], marg[1], marg[2])
    t = torch.rand(K, K, K, generator=g, dtype=torch.float64) + 0.05
    t[0, 0, 0] += 2.0  # make it far from a product
    t[3, 2, 1] += 1.0
    return t / t.sum()


STATES = list(itertools.product(range(V), repeat=L))  # state id = x0 * 25 + x1 * 5 + x2


def _sid(x: torch.Tensor) -> torch.Tensor:
    return x[..., 0] * V * V + x[..., 1] * V + x[..., 2]


def _conditionals(table: torch.Tensor) -> torch.Tensor:
    """cond[state, l, v]: P(x0_l = v | visible positions of state) for masked l; one-hot for
    decoded l; v = MASK never."""
    cond = torch.zeros(len(STATES), L, V, dtype=torch.float64)
    for sid, st in enumerate(STATES):
        sub = table
        for pos in reversed(range(L)):  # restrict to the visible values
            if st[pos] != MASK:
                sub = sub.narrow(pos, st[pos], 1)
        for pos in range(L):
            if st[pos] != MASK:
                cond[sid, pos, st[pos]] = 1.0
            else:
                dims = [d for d in range(L) if d != pos]
                m = sub.sum(dim=dims).reshape(-1)
                cond[sid, pos, :K] = m / m.sum()
    return cond


class ExactDenoiser:
    """model(x) -> logits [B, 3, 5] = log of the true conditionals (mask logit -inf)."""

    def __init__(self, table):
        self.cond = _conditionals(table)
        self.logits = self.cond.log().float()

    def __call__(self, x, t=None):
        return self.logits[_sid(x)]


class SplitDenoiser(ExactDenoiser):
    """hidden(x) + head(rows): counts the rows the head is asked for."""

    head_rows = 0

    def hidden(self, x):
        return self.logits[_sid(x)] * 1.0

    def head(self, h):
        self.head_rows += h.shape[0]
        return h


def _state_law(cond, plan) -> torch.Tensor:
    """Exact law over the 125 states after the steps ``plan`` from the all-mask state."""
    dist = torch.zeros(len(STATES), dtype=torch.float64)
    dist[_sid(torch.tensor([MASK] * L))] = 1.0
    for _t, _s, a_t, a_s, sigma in plan:
        sig = 0.0 if sigma is None else sigma
        q = 1.0 if a_t >= 1 else min(1.0, max(0.0, (a_s - (1 - sig) * a_t) / (1 - a_t)))
        vec = torch.zeros(len(STATES), L, V, dtype=torch.float64)
        for sid, st in enumerate(STATES):
            for pos in range(L):
                if st[pos] == MASK:
                    vec[sid, pos] = q * cond[sid, pos]
                    vec[sid, pos, MASK] = 1 - q
                else:
                    vec[sid, pos, st[pos]] = 1 - sig
                    vec[sid, pos, MASK] += sig
        trans = torch.einsum("sa,sb,sc->sabc", vec[:, 0], vec[:, 1], vec[:, 2]).reshape(
            len(STATES), -1
        )
        dist = dist @ trans
    return dist


def _chain_law(cond, plan, final: str = "argmax") -> torch.Tensor:
    """Exact law over the 64 complete sequences of the chain ``plan`` then the final map."""
    dist = _state_law(cond, plan)
    out = torch.zeros(K, K, K, dtype=torch.float64)
    for sid, st in enumerate(STATES):
        if dist[sid] == 0:
            continue
        choices = []
        for pos in range(L):
            if st[pos] != MASK:
                choices.append({st[pos]: 1.0})
            elif final == "argmax":
                choices.append({int(cond[sid, pos, :K].argmax()): 1.0})
            else:
                choices.append({v: float(cond[sid, pos, v]) for v in range(K)})
        for combo in itertools.product(*[c.items() for c in choices]):
            w = math.prod(p for _, p in combo)
            out[tuple(v for v, _ in combo)] += dist[sid] * w
    return out.reshape(-1)


def _chi2_ok(x: torch.Tensor, law: torch.Tensor) -> tuple[bool, float]:
    assert (x != MASK).all()
    idx = x[:, 0] * K * K + x[:, 1] * K + x[:, 2]
    return _chi2_counts_ok(torch.bincount(idx, minlength=K**L).double(), law)


def _chi2_counts_ok(counts: torch.Tensor, law: torch.Tensor) -> tuple[bool, float]:
    """Chi-square of counts vs a law; cells with expected count < 5 are pooled."""
    assert int(counts[law == 0].sum()) == 0, "a sample outside the law's support"
    n = counts.sum()
    exp = law * n
    big = exp >= 5
    obs_c = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    exp_c = torch.cat([exp[big], exp[~big].sum().reshape(1)])
    if exp_c[-1] < 5 and len(exp_c) > 1:  # fold a tiny remainder into the largest cell
        j = int(exp_c[:-1].argmax())
        obs_c[j] += obs_c[-1]
        exp_c[j] += exp_c[-1]
        obs_c, exp_c = obs_c[:-1], exp_c[:-1]
    exp_c *= obs_c.sum() / exp_c.sum()
    p = float(stats.chisquare(obs_c.numpy(), exp_c.numpy()).pvalue)
    return p > P_FAIL, p


@pytest.fixture(scope="module")
def joint():
    table = _table()
    return table, ExactDenoiser(table)


STEPS = 5


@pytest.mark.parametrize(
    ("sampler", "schedule"),
    [
        ("ddpm", "loglinear"),
        ("ddpm_cache", "linear"),
        ("ddpm_cache", "loglinear"),
        ("first_hitting", "linear"),
        ("first_hitting", "loglinear"),
    ],
)
def test_samplers_draw_their_chains_exact_law(joint, sampler, schedule, fresh_seed):
    table, model = joint
    law = _chain_law(model.cond, sampling.grid_plan(STEPS, schedule))
    res = sampling.sample(
        model,
        sampler=sampler,
        batch_size=N,
        length=L,
        mask_index=MASK,
        steps=STEPS,
        schedule=schedule,
        seed=fresh_seed % 2**40,
    )
    ok, p = _chi2_ok(res.x, law)
    assert ok, p
    # few steps: the chain's law is visibly not the data law (so this test has teeth)
    assert 0.5 * (law - table.reshape(-1)).abs().sum() > 0.02


def test_many_steps_approach_the_data_law(joint, fresh_seed):
    table, model = joint
    law = _chain_law(model.cond, sampling.grid_plan(400, "linear"))
    assert 0.5 * (law - table.reshape(-1)).abs().sum() < 0.01
    res = sampling.first_hitting(
        model, batch_size=N, length=L, mask_index=MASK, steps=400, seed=fresh_seed % 2**40
    )
    assert _chi2_ok(res.x, law)[0]
    assert res.nfe <= 401  # event steps (+ a noise-removal call if a position is left masked)


def test_split_hidden_head_mode_is_exact_and_reads_only_changing_rows(joint, fresh_seed):
    table, _ = joint
    model = SplitDenoiser(table)
    law = _chain_law(model.cond, sampling.grid_plan(STEPS, "linear"))
    res = sampling.ddpm_cache(
        model, batch_size=N, length=L, mask_index=MASK, steps=STEPS, seed=fresh_seed % 2**40
    )
    assert _chi2_ok(res.x, law)[0]
    assert model.head_rows == N * L  # each position's logits computed exactly once


@pytest.mark.parametrize("sampler", ["ddpm_cache", "remdm-cap"])
def test_per_row_cache_is_exact_and_evaluates_fewer_sequences(joint, sampler, fresh_seed):
    _, model = joint
    kw = {"eta": 0.3} if sampler == "remdm-cap" else {}
    plan = sampling.remdm_plan("cap", STEPS, **kw) if kw else sampling.grid_plan(STEPS, "linear")
    law = _chain_law(model.cond, plan)
    res = sampling.sample(
        model,
        sampler=sampler,
        batch_size=N,
        length=L,
        mask_index=MASK,
        steps=STEPS,
        per_row_cache=True,
        seed=fresh_seed % 2**40,
        **kw,
    )
    assert _chi2_ok(res.x, law)[0]
    full = sampling.sample(
        model,
        sampler=sampler,
        batch_size=N,
        length=L,
        mask_index=MASK,
        steps=STEPS,
        seed=fresh_seed % 2**40,
        **kw,
    )
    assert res.sequences < full.sequences == full.nfe * N


def test_analytic_matches_its_chain(joint, fresh_seed):
    _, model = joint
    law = _chain_law(model.cond, sampling.grid_plan(STEPS, "loglinear"), final="sample")
    res = sampling.analytic(
        model, batch_size=N, length=L, mask_index=MASK, steps=STEPS, seed=fresh_seed % 2**40
    )
    assert _chi2_ok(res.x, law)[0]
    # time-conditioned: a call every step, plus the denoiser step if a position is still masked
    assert STEPS <= res.nfe <= STEPS + 1


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm_cache"])
def test_seed_style_reference_agrees(joint, sampler, fresh_seed):
    _, model = joint
    schedule = "loglinear" if sampler == "ddpm" else "linear"
    law = _chain_law(model.cond, sampling.grid_plan(STEPS, schedule))
    g = torch.Generator().manual_seed(fresh_seed)
    x, _ = baselines.seed_sample(
        model, batch_size=N, length=L, mask_index=MASK, steps=STEPS, sampler=sampler, generator=g
    )
    assert _chi2_ok(x, law)[0]


@pytest.mark.parametrize("strategy", ["cap", "rescale", "loop", "fb", "dfm"])
def test_remdm_samplers_draw_their_chains_exact_law(joint, strategy, fresh_seed):
    _, model = joint
    steps = 12
    kw = {"eta": 0.3} if strategy in ("cap", "rescale", "loop") else {}
    plan = sampling.remdm_plan(strategy, steps, **kw)
    law = _chain_law(model.cond, plan)
    res = sampling.remdm(
        model,
        strategy=strategy,
        batch_size=N,
        length=L,
        mask_index=MASK,
        steps=steps,
        seed=fresh_seed % 2**40,
        **kw,
    )
    assert _chi2_ok(res.x, law)[0]
    assert res.steps == len(plan)
    if strategy == "dfm":
        assert res.steps != steps


@pytest.mark.parametrize("strategy", ["cap", "rescale", "loop"])
def test_remdm_keeps_the_marginals(strategy, fresh_seed):
    """With valid sigma (<= sigma_max) ReMDM's posterior keeps the forward marginals, so with an
    exact denoiser of a product distribution it samples that distribution exactly (up to the
    1 - alpha_end mass still masked before noise removal, which the law includes)."""
    table = _table(product=True)
    model = ExactDenoiser(table)
    kw = {"eta": {"cap": 0.05, "rescale": 0.5, "loop": 0.05}[strategy]}
    plan = sampling.remdm_plan(strategy, 16, **kw)
    for _t, _s, a_t, a_s, sigma in plan:
        assert sigma is None or sigma <= remask_rates.sigma_max(a_t, a_s) + 1e-12
    law = _chain_law(model.cond, plan)
    a_end = plan[-1][3]
    marg = [table.sum(dim=[d for d in range(L) if d != pos]) for pos in range(L)]
    final = [a_end * m + (1 - a_end) * torch.nn.functional.one_hot(m.argmax(), K) for m in marg]
    target = torch.einsum("a,b,c->abc", *final).reshape(-1)
    assert (law - target).abs().max() < 1e-9  # theory, checked on the exact chain law
    res = sampling.remdm(
        model,
        strategy=strategy,
        batch_size=N,
        length=L,
        mask_index=MASK,
        steps=16,
        seed=fresh_seed % 2**40,
        **kw,
    )
    assert _chi2_ok(res.x, target)[0]


def test_seed_style_remdm_step_and_mask_step_share_the_exact_law(joint, fresh_seed):
    """The first three of six ReMDM-cap steps (eta large enough to remask): the seed-style
    materialised posterior (float64 race) and the fused mask_step both follow the exact law of
    the intermediate state (125 states)."""
    _, model = joint
    plan = sampling.remdm_plan("cap", 6, eta=0.4)[:3]  # stop half-way: masks and remasks left
    law = _state_law(model.cond, plan)
    g = torch.Generator().manual_seed(fresh_seed)
    x_seed = torch.full((N, L), MASK)
    x_ops = x_seed.clone()
    for k, (t, s, a_t, a_s, sigma) in enumerate(plan):
        _, x_seed, _ = baselines.seed_remdm_update(
            model, x_seed, t, t - s, MASK, sigma, generator=g
        )
        x_ops, _, _ = ops.mask_step(
            x_ops,
            model(x_ops),
            mask_index=MASK,
            alpha_t=a_t,
            alpha_s=a_s,
            remask=sigma,
            seed=fresh_seed % 2**40,
            offset=k,
        )
    for x in (x_seed, x_ops):
        ok, p = _chi2_counts_ok(torch.bincount(_sid(x), minlength=len(STATES)).double(), law)
        assert ok, p
    assert law[[sid for sid, st in enumerate(STATES) if MASK in st]].sum() > 0.05


def test_remdm_conf_remasks_by_the_conf_law(joint, monkeypatch, fresh_seed):
    """ReMDM-conf: at every step a decoded position i remasks with probability
    sigma_i = softmax over the decoded positions of its sequence of (-p_i) times sigma_max, p_i
    the probability its token had when it was drawn. p_i is tracked here from the exact
    denoiser and the observed transitions, the remask probabilities the sampler hands to
    mask_step must equal that law, and the remask events must occur at those rates (chi-square
    over five bins of sigma, 1e-7 false-failure probability)."""
    _, model = joint
    steps, n = 12, 20_000
    calls = []
    real = ops.mask_step

    def spy(x, logits, **kw):
        out = real(x, logits, **kw)
        calls.append((x.clone(), kw["remask"], out[0].clone()))
        return out

    monkeypatch.setattr(ops, "mask_step", spy)
    res = sampling.remdm(model, strategy="conf", batch_size=n, length=L, mask_index=MASK,
                         steps=steps, seed=fresh_seed % 2**40, noise_removal=False)  # fmt: skip
    plan = sampling.remdm_plan("conf", steps)
    assert len(calls) == len(plan)
    p_track = torch.full((n, L), float("nan"), dtype=torch.float64)
    sig_all, hit_all = [], []
    for (x, remask, x_next), (_t, _s, _a_t, _a_s, sigma_max) in zip(calls, plan, strict=True):
        decoded = x != MASK
        conf = torch.where(decoded, -p_track, float("-inf"))
        law = torch.softmax(conf, dim=1).nan_to_num(0.0) * sigma_max
        if remask is None:
            assert not decoded.any()
        else:
            torch.testing.assert_close(remask, law, rtol=0, atol=1e-5)
            sig_all.append(law[decoded])
            hit_all.append((x_next == MASK)[decoded])
        drawn = ~decoded & (x_next != MASK)
        cond = model.cond[_sid(x)]  # [n, L, V]: the denoiser's distribution at x
        p_new = cond.gather(2, x_next.clamp(max=K - 1)[..., None])[..., 0]
        p_track = torch.where(drawn, p_new, torch.where(x_next == MASK, float("nan"), p_track))
    sig, hit = torch.cat(sig_all), torch.cat(hit_all)
    assert int(hit.sum()) > 1000  # remasking happened, a lot
    # remask events vs the law: five bins of sigma, each a Poisson-binomial count
    edges = torch.quantile(sig, torch.linspace(0, 1, 6, dtype=torch.float64)).unique()
    chi2, df = 0.0, 0
    for k, (lo, hi) in enumerate(itertools.pairwise(edges.tolist())):
        last = k == len(edges) - 2
        sel = (sig >= lo) & ((sig <= hi) if last else (sig < hi))
        exp, var = sig[sel].sum(), (sig[sel] * (1 - sig[sel])).sum()
        if var > 0:
            chi2, df = chi2 + float((hit[sel].sum() - exp) ** 2 / var), df + 1
    assert df >= 3
    p = float(stats.chi2.sf(chi2, df=df))
    assert p > P_FAIL, (chi2, p)
    assert (res.x != MASK).any()


# ------------------------------------------------------------------------------- call counts


def _expected_calls(T: int, length: int, schedule: str, eps: float = 1e-5) -> tuple[float, float]:
    """Exact E[calls] of ddpm_cache (no noise removal: 1 + #change steps among the first T-1)
    and of first_hitting (#event steps), B = 1, from the per-step unmask law of one position."""
    plan = sampling.grid_plan(T, schedule, eps)
    m = [1 - plan[0][2]] + [1 - p[3] for p in plan]
    q = [(m[k] - m[k + 1]) / m[0] for k in range(T)]
    occupied = [1 - (1 - qk) ** length for qk in q]
    return 1 + sum(occupied[:-1]), sum(occupied)


def test_ddpm_cache_and_first_hitting_call_counts(fresh_seed):
    T, length, runs = 64, 48, 150
    model = lambda x: torch.zeros(x.shape[0], x.shape[1], 6)  # noqa: E731
    e_cache, e_fh = _expected_calls(T, length, "linear")
    assert abs(e_cache - T * (1 - math.exp(-length / T))) < 0.05 * e_cache
    for fn, expected in ((sampling.ddpm_cache, e_cache), (sampling.first_hitting, e_fh)):
        calls = torch.tensor(
            [
                fn(
                    model,
                    batch_size=1,
                    length=length,
                    mask_index=5,
                    steps=T,
                    noise_removal=False,
                    seed=(fresh_seed + r) % 2**40,
                ).nfe
                for r in range(runs)
            ],
            dtype=torch.float64,
        )
        z = (calls.mean() - expected) / (calls.std() / runs**0.5)
        assert abs(z) < 6, (fn.__name__, float(calls.mean()), expected)


def test_ddpm_calls_every_step(joint):
    _, model = joint
    res = sampling.ddpm(model, batch_size=4, length=L, mask_index=MASK, steps=7, seed=1)
    # one call per step, plus the noise-removal call when a position is still masked
    assert res.nfe in (7, 8) and res.steps == 7


# ------------------------------------------------------------------------------- API behaviour


def test_same_seed_same_samples(joint):
    _, model = joint
    for sampler in ["ddpm", "ddpm_cache", "first_hitting", "remdm-cap", "remdm-conf"]:
        kw = {"batch_size": 64, "length": L, "mask_index": MASK, "steps": 10}
        a = sampling.sample(model, sampler=sampler, seed=7, **kw).x
        b = sampling.sample(model, sampler=sampler, seed=7, **kw).x
        c = sampling.sample(model, sampler=sampler, seed=8, **kw).x
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_prefix_is_kept_and_semi_ar_slides(fresh_seed):
    Vb = 20
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(Vb, Vb, generator=gen)

    def model(x):
        return torch.nn.functional.one_hot(x, Vb).float() @ W

    prefix = torch.tensor([3, 1, 4, 1])
    for sampler in ["ddpm", "ddpm_cache", "first_hitting", "remdm-cap", "remdm-loop", "remdm-conf"]:
        res = sampling.sample(
            model,
            sampler=sampler,
            batch_size=5,
            length=12,
            mask_index=Vb - 1,
            steps=30,
            prefix=prefix,
            seed=fresh_seed % 2**40,
        )
        assert (res.x[:, :4] == prefix).all() and (res.x != Vb - 1).all()
    res = sampling.semi_ar(
        model,
        batch_size=2,
        length=8,
        mask_index=Vb - 1,
        stride_length=3,
        num_strides=2,
        steps=20,
        seed=fresh_seed % 2**40,
    )
    assert res.x.shape == (2, 8 + 2 * 3) and (res.x != Vb - 1).all()


def test_nvtx_flag_and_bad_arguments(joint, monkeypatch):
    _, model = joint
    monkeypatch.setenv("MDFAST_NVTX", "1")
    sampling.ddpm_cache(model, batch_size=2, length=L, mask_index=MASK, steps=4, seed=0)
    kw = {"batch_size": 2, "length": L, "mask_index": MASK}
    with pytest.raises(ValueError, match="'steps'"):
        sampling.ddpm(model, steps=0, **kw)
    with pytest.raises(ValueError, match="'seed'"):
        sampling.ddpm(model, steps=3, seed=-1, **kw)
    with pytest.raises(ValueError, match="'strategy'"):
        sampling.remdm(model, steps=3, strategy="nope", **kw)
    with pytest.raises(ValueError, match="'sampler'"):
        sampling.sample(model, sampler="nope", steps=3, **kw)
    with pytest.raises(ValueError, match="'prefix'"):
        sampling.ddpm(model, steps=3, prefix=torch.tensor([MASK]), **kw)


# ------------------------------------------------------------------------------- settings


def test_settings_object_equals_keywords(joint, fresh_seed):
    """A SamplerSettings and the same options as keywords give the same samples."""
    _, model = joint
    kw = {"batch_size": 64, "length": L, "mask_index": MASK, "steps": 6,
          "seed": fresh_seed % 2**40, "temperature": 0.8, "top_k": 3}  # fmt: skip
    st = sampling.SamplerSettings(**kw)
    for name in ("ddpm", "ddpm_cache", "first_hitting", "remdm-conf", "remdm-loop"):
        a = sampling.sample(model, st, sampler=name)
        b = sampling.sample(model, sampler=name, **kw)
        assert torch.equal(a.x, b.x) and a.nfe == b.nfe, name
    c = sampling.ddpm(model, st, steps=7)  # keywords on top of a settings object
    assert torch.equal(c.x, sampling.ddpm(model, **{**kw, "steps": 7}).x)
    assert sampling.remdm(model, st.replace(strategy="cap", eta=0.1)).steps == 6


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", 0), ("length", -1), ("steps", 2.5), ("mask_index", -3), ("seed", -1),
        ("schedule", "sqrt"), ("schedule", 3), ("eps", 1.0), ("temperature", -0.1),
        ("temperature", float("nan")), ("top_p", 0.0), ("top_k", -1), ("nucleus", "top"),
        ("noise_removal", 1), ("strategy", "nope"), ("eta", 1.5), ("t_on", 0.01),
        ("alpha_on", 1.0), ("sample_index", [0]), ("sample_index", [0, -1]),
        ("sample_index", [0.5, 1.0]),
    ],
)  # fmt: skip
def test_settings_validation_names_the_option(option, value):
    kw = {"batch_size": 2, "length": L, "mask_index": MASK, "steps": 3, option: value}
    with pytest.raises(ValueError, match=f"'{option}'"):
        sampling.SamplerSettings(**kw)


def test_sampler_rejects_options_it_does_not_read(joint):
    _, model = joint
    kw = {"batch_size": 2, "length": L, "mask_index": MASK, "steps": 3}
    with pytest.raises(TypeError, match="per_row_cache"):
        sampling.ddpm(model, per_row_cache=True, **kw)
    with pytest.raises(TypeError, match="strategy"):
        sampling.first_hitting(model, strategy="conf", **kw)
    with pytest.raises(TypeError, match="'settings'"):
        sampling.ddpm(model, {"steps": 3})


def test_deprecated_sampling_schedules_alias():
    import importlib
    import sys

    sys.modules.pop("mdfast.sampling.schedules", None)
    with pytest.warns(DeprecationWarning, match="remask_rates"):
        old = importlib.import_module("mdfast.sampling.schedules")
    from mdfast.schedules import alpha_at

    for name in ("loglinear", "linear", "cosine"):
        assert old.alpha(0.3, name) == alpha_at(0.3, name)
    assert old.sigma_cap is remask_rates.sigma_cap


# ------------------------------------------------------------------------------- keyed samples


@pytest.mark.parametrize(
    ("sampler", "split"),
    [("ddpm_cache", False), ("ddpm_cache", True), ("first_hitting", False), ("remdm-cap", True)],
)
def test_keyed_samples_draw_the_exact_law_and_ignore_the_batch(joint, sampler, split, fresh_seed):
    """``sample_index``: sample g on its own keyed stream (mdfast.rng). The chain's law
    holds (chi-square, 3000 samples) and a sample does not depend on the batch it is drawn in."""
    table, model = joint
    model = SplitDenoiser(table) if split else model
    kw = {"eta": 0.3} if sampler == "remdm-cap" else {}
    plan = sampling.remdm_plan("cap", STEPS, **kw) if kw else sampling.grid_plan(STEPS, "linear")
    law = _chain_law(model.cond, plan)
    n, seed = 3000, fresh_seed % 2**40
    opts = {"sampler": sampler, "length": L, "mask_index": MASK, "steps": STEPS, "seed": seed, **kw}
    res = sampling.sample(model, batch_size=n, sample_index=range(n), **opts)
    ok, p = _chi2_ok(res.x, law)
    assert ok, p
    part = sampling.sample(model, batch_size=3, sample_index=[5, 17, 2999], **opts)
    assert torch.equal(part.x, res.x[[5, 17, 2999]])
