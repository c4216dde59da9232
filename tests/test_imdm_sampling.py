"""IMDM's posterior and sampler against exact laws.

* The three masses of :func:`imdm_posterior` against Bayes' rule on a finite-state mask (K mask
  states, computed with explicit transition matrices) as K → ∞, and their token marginal against
  MDLM's.
* One sampler step: the (unmask, keep ε, redraw ε) frequencies by chi-square, read off the
  denoiser's inputs at the next call.
* Whole runs: the sampler with the exact denoiser of ``test_samplers`` draws the chain's exact law
  (chi-square); a zero-initialised IMDM backbone gives bit for bit MDLM's ``ddpm`` samples; the
  cached step and the ``fix_eps`` / ``mdlm_posterior`` switches change no sample; ε is a function
  of the per-sample seed alone.
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from test_samplers import MASK, STEPS, ExactDenoiser, L, N, _chain_law, _chi2_ok, _table

from mdfast import sampling
from mdfast.diffusion import IMDMBackbone, imdm_posterior, redraw_probability, seeded_eps
from mdfast.diffusion.imdm import EPS_KEY_SEED, EPS_SEEDS
from mdfast.models.dit import DiT, DiTConfig
from mdfast.ops import uniform
from mdfast.rng import Purpose, stream_seed

P_FAIL = 1e-7


def _bayes_posterior(alpha_t: float, alpha_s: float, K: int, V: int = 3):
    """(unmask, same mask state, another mask state) of q(z_s | z_t = m_0, x0 = 0) by Bayes' rule
    on the forward process with V tokens and K mask states: from s to t a token stays with
    probability r = α_t/α_s, else jumps to a uniform mask state; a mask state stays with
    probability r, else jumps to a uniform mask state (so q(z_t | x0) = α_t on x0 and
    (1 − α_t)/K on each mask state, for every t)."""
    S = V + K
    r = alpha_t / alpha_s
    step = torch.zeros(S, S, dtype=torch.float64)  # step[a, b] = q(z_t = b | z_s = a)
    step[:V, V:] = (1 - r) / K
    step[:V, :V] = torch.eye(V, dtype=torch.float64) * r
    step[V:, V:] = (1 - r) / K + torch.eye(K, dtype=torch.float64) * r
    prior_s = torch.zeros(S, dtype=torch.float64)  # q(z_s | x0 = 0)
    prior_s[0] = alpha_s
    prior_s[V:] = (1 - alpha_s) / K
    joint_ = prior_s * step[:, V]  # z_t = the first mask state
    post = joint_ / joint_.sum()
    assert abs(joint_.sum() - (1 - alpha_t) / K) < 1e-15  # the marginal is the forward one
    return float(post[:V].sum()), float(post[V]), float(post[V + 1 :].sum())


def test_posterior_masses_are_the_infinite_mask_limit_of_bayes(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    for _ in range(4):
        a = torch.rand(2, generator=g, dtype=torch.float64).sort().values * 0.98 + 0.01
        alpha_t, alpha_s = float(a[0]), float(a[1])
        pu, pk, pr = (float(v) for v in imdm_posterior(alpha_t, alpha_s))
        for K in (50, 400):
            bu, bk, br = _bayes_posterior(alpha_t, alpha_s, K)
            # exact at finite K: a jump lands on the same state with probability 1/K
            assert bu == pytest.approx(pu, abs=1e-13)
            assert bk == pytest.approx(pk + pr / K, abs=1e-13)
            assert br == pytest.approx(pr * (K - 1) / K, abs=1e-13)
        # the token marginal is MDLM's: unmask (α_s − α_t)/(1 − α_t), stay (1 − α_s)/(1 − α_t)
        assert pu == pytest.approx((alpha_s - alpha_t) / (1 - alpha_t), abs=1e-15)
        assert pk + pr == pytest.approx((1 - alpha_s) / (1 - alpha_t), abs=1e-15)
        # the sampler's second event: redraw given stay, times the stay mass, is the redraw mass
        q = float(redraw_probability(alpha_t, alpha_s))
        assert q == pytest.approx(1 - alpha_t / alpha_s, abs=1e-15)
        assert (pk + pr) * q == pytest.approx(pr, abs=1e-15)
    assert float(redraw_probability(0.3, 0.6)) == pytest.approx(0.5)
    assert float(redraw_probability(0.3, 1.0)) == 0.0  # at α_s = 1 nothing stays masked


class SpyModel:
    """An ε-aware denoiser with uniform logits over ``vocab`` tokens that records its inputs."""

    def __init__(self, vocab: int, noise_dim: int = 2, depends_on_eps: bool = False):
        self.vocab, self.noise_dim, self.depends = vocab, noise_dim, depends_on_eps
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, eps=None):
        self.calls.append((x.clone(), None if eps is None else eps.clone()))
        logits = torch.zeros(*x.shape, self.vocab + 1)
        logits[..., self.vocab] = float("-inf")
        if self.depends and eps is not None:  # token 0 favoured where ε[..., 0] > 0
            logits[..., 0] += 3.0 * (eps[..., 0] > 0).float()
        return logits


def test_one_step_three_way_frequencies(fresh_seed):
    """x_1 and ε_1 after the first step are the denoiser's inputs at its second call (no cache):
    count unmask / keep / redraw over 40k masked positions, chi-square against the posterior."""
    vocab, B, Lq = 4, 4000, 10
    model = SpyModel(vocab)
    t0, end = 0.8, 0.5  # grid linspace(1, end, 3) · t0: the first step goes 0.8 -> 0.6
    sampling.imdm(model, batch_size=B, length=Lq, mask_index=vocab, steps=2, eps=end,
                  seed=fresh_seed % 2**40, x_start=torch.full((B, Lq), vocab),
                  t_start=torch.full((B,), t0), noise_removal=False, cache=False)  # fmt: skip
    (x0, e0), (x1, e1) = model.calls[0], model.calls[1]  # the state before and after step 1
    assert (x0 == vocab).all()
    unmask = x1 != vocab
    same = (e1 == e0).all(-1)
    assert same[unmask].all()  # ε of a position that unmasks is not redrawn
    keep, redraw = ~unmask & same, ~unmask & ~same
    counts = [int(unmask.sum()), int(keep.sum()), int(redraw.sum())]
    from mdfast.schedules import get_schedule

    sched = get_schedule("loglinear")
    a_t = float(sched.alpha(torch.tensor(t0, dtype=torch.float64)))
    a_s = float(sched.alpha(torch.tensor(t0 * (1 + end) / 2, dtype=torch.float64)))
    probs = torch.stack(imdm_posterior(a_t, a_s)).numpy()
    p = stats.chisquare(counts, probs * sum(counts)).pvalue
    assert p > P_FAIL, (counts, probs)
    assert min(counts) > 1000  # every branch is exercised


def test_sampler_draws_the_chains_exact_law(fresh_seed):
    """Without ε (an MDLM denoiser) the sampler is MDLM's chain on its grid, whose last step goes
    to α = 1 (every position still masked samples its token)."""
    model = ExactDenoiser(_table())
    plan = sampling.grid_plan(STEPS, "loglinear")
    law = _chain_law(model.cond, plan[:-1], final="sample")
    res = sampling.imdm(model, batch_size=N, length=L, mask_index=MASK, steps=STEPS,
                        seed=fresh_seed % 2**40)  # fmt: skip
    ok, p = _chi2_ok(res.x, law)
    assert ok, p
    # ε that the denoiser ignores changes nothing in the law, only the calls (redraws)
    res = sampling.imdm(_EpsBlind(model), batch_size=N, length=L, mask_index=MASK, steps=STEPS,
                        seed=(fresh_seed + 1) % 2**40)  # fmt: skip
    ok, p = _chi2_ok(res.x, law)
    assert ok, p


class _EpsBlind:
    noise_dim = 3

    def __init__(self, model):
        self.model = model

    def __call__(self, x, eps=None):
        assert eps is not None and eps.shape == (*x.shape, 3)
        return self.model(x)


def _tiny_imdm(vocab: int = 7, seed: int = 0) -> IMDMBackbone:
    torch.manual_seed(seed)
    dit = DiT(DiTConfig(vocab_size=vocab + 1, hidden_dim=32, cond_dim=16, n_blocks=1, n_heads=2,
                        dropout=0.0, model_length=8))  # fmt: skip
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return IMDMBackbone(dit, mask_index=vocab).eval()


@torch.no_grad()
def test_zero_initialised_imdm_samples_are_mdlm_bit_for_bit(fresh_seed):
    bb = _tiny_imdm()
    kw = {"batch_size": 64, "length": 8, "mask_index": 7, "steps": 6, "seed": fresh_seed % 2**40}
    mdlm = sampling.ddpm(bb.dit, **kw)
    for switches in ({}, {"fix_eps": True}, {"mdlm_posterior": True}):
        res = sampling.imdm(bb, last_step="argmax", **kw, **switches)
        assert torch.equal(res.x, mdlm.x)
    # with a trained (non-zero) ε branch the samples depend on ε
    torch.nn.init.normal_(bb.eps_mlp.fc2.weight, std=0.5)
    assert not torch.equal(sampling.imdm(bb, last_step="argmax", **kw).x, mdlm.x)


@torch.no_grad()
def test_cache_switches_and_seeds(fresh_seed):
    bb = _tiny_imdm()
    torch.nn.init.normal_(bb.eps_mlp.fc2.weight, std=0.5)
    seed = fresh_seed % 2**40
    kw = {"batch_size": 3, "length": 8, "mask_index": 7, "steps": 40, "seed": seed}
    cached = sampling.imdm(bb, **kw)
    plain = sampling.imdm(bb, cache=False, **kw)
    assert torch.equal(cached.x, plain.x) and plain.nfe == 40 and cached.nfe < 40
    # fix_eps and mdlm_posterior are the same chain (ε kept), and cache more
    a = sampling.imdm(bb, fix_eps=True, **kw)
    b = sampling.imdm(bb, mdlm_posterior=True, **kw)
    assert torch.equal(a.x, b.x) and a.nfe <= cached.nfe
    assert torch.equal(sampling.imdm(bb, **kw).x, cached.x)  # same seed, same samples
    assert not torch.equal(sampling.imdm(bb, **{**kw, "seed": seed + 1}).x, cached.x)


def test_eps_is_a_function_of_the_sample_seed(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    seeds = torch.randint(0, EPS_SEEDS, (5,), generator=g)
    e = seeded_eps(seeds, 4, 3, scale=2.0)
    assert e.shape == (5, 4, 3) and e.abs().max() <= 2.0
    # row b is the keyed EPSILON noise of sample index = its seed alone, in any batch
    torch.testing.assert_close(seeded_eps(seeds[[3, 1]], 4, 3, scale=2.0), e[[3, 1]])
    key = stream_seed(EPS_KEY_SEED, Purpose.EPSILON, "seeded")
    u = uniform((12,), key, int(seeds[2]), dtype=torch.float32)
    torch.testing.assert_close(e[2].reshape(-1), (2 * u - 1) * 2.0)
    u1 = uniform((12,), key, (1 << 32) | int(seeds[2]), dtype=torch.float32)
    torch.testing.assert_close(seeded_eps(seeds, 4, 3, step=1)[2].reshape(-1), 2 * u1 - 1)
    assert not torch.equal(seeded_eps(seeds, 4, 3, step=1), seeded_eps(seeds, 4, 3))
    # the sampler starts from these ε; duplicates (equal seeds) share it, whatever the run seed
    model = SpyModel(5, noise_dim=3)
    dup = torch.tensor([7, 7, 9])
    sampling.imdm(model, batch_size=3, length=4, mask_index=5, steps=2, eps_seeds=dup,
                  seed=fresh_seed % 2**40)  # fmt: skip
    first = model.calls[0][1]
    torch.testing.assert_close(first, seeded_eps(dup, 4, 3))
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])
    with pytest.raises(ValueError, match="'seeds'"):
        seeded_eps(torch.tensor([EPS_SEEDS]), 4, 3)
    # default ε seeds: keyed by the sample's global index, whatever batch it is drawn in
    run_seed = fresh_seed % 2**40
    seeds7 = sampling.default_eps_seeds(run_seed, 7)
    assert torch.equal(sampling.default_eps_seeds(run_seed, [5, 2]), seeds7[[5, 2]])
    assert seeds7.unique().numel() == 7 and int(seeds7.min()) >= 0
    assert int(seeds7.max()) < EPS_SEEDS


def test_redraws_come_from_the_seed_and_fix_eps_keeps_eps(fresh_seed):
    """Two samples with the same ε seed and the same events redraw the same ε: every ε the
    denoiser sees is the initial one or a redraw of its seed's stream (the seed code's redraws
    are unseeded). With fix_eps the ε never changes."""
    model = SpyModel(5, noise_dim=2)
    seeds = torch.tensor([11, 12])
    sampling.imdm(model, batch_size=2, length=6, mask_index=5, steps=30, eps_seeds=seeds,
                  seed=fresh_seed % 2**40, cache=False)  # fmt: skip
    changed = 0
    for k, (_, e) in enumerate(model.calls):
        for b in range(2):
            for pos in range(6):
                allowed = [seeded_eps(seeds[b : b + 1], 6, 2, step=j)[0, pos] for j in range(k + 1)]
                assert any(torch.equal(e[b, pos], a) for a in allowed)
        changed += int(k > 0 and not torch.equal(e, model.calls[k - 1][1]))
    assert changed > 0
    model = SpyModel(5, noise_dim=2)
    sampling.imdm(model, batch_size=2, length=6, mask_index=5, steps=30, eps_seeds=seeds,
                  fix_eps=True, cache=False)  # fmt: skip
    assert all(torch.equal(e, model.calls[0][1]) for _, e in model.calls)


def test_prefix_and_start_state_are_kept(fresh_seed):
    model = SpyModel(6, noise_dim=2, depends_on_eps=True)
    prefix = torch.tensor([3, 1, 4])
    res = sampling.sample(model, sampler="imdm", batch_size=4, length=9, mask_index=6, steps=5,
                          prefix=prefix, seed=fresh_seed % 2**40)  # fmt: skip
    assert (res.x[:, :3] == prefix).all() and (res.x != 6).all()
    x0 = torch.tensor([[6, 2, 6, 6], [1, 1, 1, 6]])
    res = sampling.imdm(model, batch_size=2, length=4, mask_index=6, steps=3, x_start=x0,
                        t_start=torch.tensor([0.9, 0.3]))  # fmt: skip
    assert (res.x[x0 != 6] == x0[x0 != 6]).all() and (res.x != 6).all()
    res = sampling.imdm(model, batch_size=2, length=4, mask_index=6, steps=3, x_start=x0,
                        noise_removal=False, eps=0.9)  # fmt: skip
    assert (res.x[x0 != 6] == x0[x0 != 6]).all()


def test_bad_arguments():
    model = SpyModel(5)
    kw = {"batch_size": 2, "length": 4, "mask_index": 5, "steps": 3}
    with pytest.raises(ValueError, match="'last_step'"):
        sampling.imdm(model, last_step="greedy", **kw)
    with pytest.raises(ValueError, match="'eps_seeds'"):
        sampling.imdm(model, eps_seeds=torch.tensor([1, 2, 3]), **kw)
    with pytest.raises(ValueError, match="'t_start'"):
        sampling.imdm(model, t_start=torch.ones(2), **kw)
    with pytest.raises(ValueError, match="'x_start'"):
        sampling.imdm(model, x_start=torch.full((3, 4), 5), **kw)
    with pytest.raises(ValueError, match="'steps'"):
        sampling.imdm(model, **{**kw, "steps": 0})


def test_keyed_samples_draw_the_exact_law_and_ignore_the_batch(fresh_seed):
    """``sample_index``: sample g draws on its own keyed stream (events, tokens, redraws) and its
    default ε seed is keyed by g. The chain's law holds (chi-square, 3000 samples) and a sample
    (with an ε-dependent denoiser, duplicates by shared ε seeds) does not depend on its batch."""
    model = ExactDenoiser(_table())
    plan = sampling.grid_plan(STEPS, "loglinear")
    law = _chain_law(model.cond, plan[:-1], final="sample")
    n, seed = 3000, fresh_seed % 2**40
    opts = {"length": L, "mask_index": MASK, "steps": STEPS, "seed": seed}
    res = sampling.imdm(_EpsBlind(model), batch_size=n, sample_index=range(n), **opts)
    ok, p = _chi2_ok(res.x, law)
    assert ok, p
    spy = SpyModel(5, noise_dim=2, depends_on_eps=True)
    opts = {"length": 6, "mask_index": 5, "steps": 8, "seed": seed}
    full = sampling.imdm(spy, batch_size=40, sample_index=range(40), **opts)
    part = sampling.imdm(spy, batch_size=3, sample_index=[5, 17, 39], **opts)
    assert torch.equal(part.x, full.x[[5, 17, 39]])
    with pytest.raises(ValueError, match="'t_start'"):
        sampling.imdm(spy, batch_size=2, sample_index=[0, 1], x_start=torch.full((2, 6), 5),
                      t_start=torch.ones(2), **opts)  # fmt: skip


def test_infix_template_is_kept(fresh_seed):
    """A prefix template with −1 at free positions (fixed tokens in the middle) is never touched."""
    model = SpyModel(6, noise_dim=2, depends_on_eps=True)
    template = torch.tensor([-1, 2, -1, 4, 4])
    res = sampling.imdm(model, batch_size=8, length=7, mask_index=6, steps=4, prefix=template,
                        seed=fresh_seed % 2**40, sample_index=range(8))  # fmt: skip
    assert (res.x[:, [1, 3, 4]] == torch.tensor([2, 4, 4])).all() and (res.x != 6).all()
