"""mdfast.integrations.mdlm: patching stand-ins of MDLM's and ReMDM's ``Diffusion``
(``bench/mdlm_standin.py``, ``bench/remdm_standin.py``, written to those codebases' contracts).

* Loss: the patched ``_loss`` equals the original on the same batch and torch seed, per token,
  within bounds derived from the precision of each path (float64; bf16 logits as MDLM's DiT emits
  them under autocast), with and without the fused output layer; gradients too.
* Sampling: the patched ``_sample`` loops (MDLM ``ddpm`` / ``ddpm_cache``, time-conditioned too)
  draw the exact law of their chain, computed over every state of a 3-position, 3-token model;
  the original stand-ins are held to the same law, so both have it. ReMDM's strategies (cap,
  rescale, conf, loop phases, forward-backward, DFM, nucleus) are tested one step at a time
  against the exact posterior. A cached step reads no logits (poisoned caches) and runs no
  network; cache reuse keeps the network calls to the steps where a token unmasks.
* ``_sample_categorical`` draws p / sum(p) exactly; detection errors; ``unpatch``; a patched
  model round-trips a Lightning-layout checkpoint.

Chi-square tests pool cells with expected count < 5 and fail at p < 1e-6.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from scipy import stats
from torch import nn

import bench.mdlm_standin as mdlm_module
import bench.remdm_standin as remdm_module
from bench.mdlm_standin import AutocastDiT, MDLMDiffusion, mdlm_config
from bench.remdm_standin import ReMDMDiffusion, remdm_config
from mdfast.baselines import seed_nucleus
from mdfast.integrations import mdlm as integration
from mdfast.integrations.mdlm import DenoiserCache
from mdfast.models import DiTConfig, load_mdlm
from mdfast.sampling import remask_rates

P_FAIL = 1e-6
EPS64 = torch.finfo(torch.float64).eps
U_BF16 = 2.0**-8  # unit roundoff of bfloat16 (8-bit significand)


@pytest.fixture(autouse=True)
def _unpatch_after(monkeypatch):
    """Whatever a test patches is unpatched after it (the module-level _sample_categorical of the
    stand-ins is shared by every patch of their classes and instances)."""
    patched = []
    patch = integration.patch

    def recording(target, **kwargs):
        patched.append(target)
        return patch(target, **kwargs)

    monkeypatch.setattr(integration, "patch", recording)
    yield
    for target in reversed(patched):
        if integration.is_patched(target) and (
            isinstance(target, type) or "_mdfast_patch" in target.__dict__
        ):
            integration.unpatch(target)
    assert not hasattr(mdlm_module._sample_categorical, "__wrapped__")
    assert not hasattr(remdm_module._sample_categorical, "__wrapped__")


def _chi2_p(counts: torch.Tensor, law: torch.Tensor) -> float:
    """p-value of counts against a law; cells with expected count < 5 pooled."""
    counts, law = counts.double().reshape(-1), law.double().reshape(-1)
    assert int(counts[law <= 0].sum()) == 0, "a draw outside the law's support"
    expected = law / law.sum() * counts.sum()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    if exp[-1] < 5:  # fold a small remainder into the largest cell
        j = int(exp[:-1].argmax())
        obs[j] += obs[-1]
        exp[j] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    if len(obs) < 2:
        return 1.0
    return float(stats.chisquare(obs.numpy(), exp.numpy()).pvalue)


# ---------------------------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------------------------

V_LOSS, L_LOSS, B_LOSS = 41, 24, 6


def _dit(dtype=torch.float64, autocast=None, dropout=0.1, seed=3) -> AutocastDiT:
    cfg = DiTConfig(
        vocab_size=V_LOSS,
        hidden_dim=32,
        cond_dim=16,
        n_blocks=1,
        n_heads=2,
        dropout=dropout,
        model_length=L_LOSS,
    )
    torch.manual_seed(seed)
    model = AutocastDiT(cfg, autocast=autocast)
    with torch.no_grad():  # MDLM zero-initialises the adaLN and output layers: randomise them
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]))
    return model.to(dtype)


def _mdlm(backbone, **config) -> MDLMDiffusion:
    return MDLMDiffusion(mdlm_config(length=L_LOSS, **config), backbone, V_LOSS)


def _loss_pair(make, seed, **patch_kwargs):
    """(original, patched) ``_loss`` outputs on the same batch and torch seed, the patched model's
    two calls (the first validates the fused output layer, the second uses it), the max |logit| of
    each row that the original saw, and the two models."""
    orig, new = make(), make()
    integration.patch(new, **patch_kwargs)
    x0 = torch.randint(0, V_LOSS - 1, (B_LOSS, L_LOSS), generator=torch.Generator().manual_seed(7))
    am = torch.ones(B_LOSS, L_LOSS)
    am[0, -5:] = 0  # MDLM's attention mask
    zmax = []
    hook = orig.backbone.register_forward_hook(
        lambda m, i, out: zmax.append(out.detach().abs().amax(-1).double())
    )
    torch.manual_seed(seed)
    ref = orig._loss(x0, am)
    hook.remove()
    out = []
    for _ in range(2):
        torch.manual_seed(seed)
        out.append(new._loss(x0, am))
    return ref, out, zmax[0], orig, new


def _row_t(model, seed) -> torch.Tensor:
    """The t of each sequence in the call seeded with ``seed`` (``_sample_t`` draws first)."""
    torch.manual_seed(seed)
    return model._sample_t(B_LOSS, torch.device("cpu")).double()


@pytest.mark.parametrize("fuse", [False, None])
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"T": 1000},
        {"change_of_variables": True},
        {"importance_sampling": True},
    ],
    ids=["continuous", "discrete-T1000", "change-of-variables", "importance-sampling"],
)
def test_patched_loss_equals_original_float64(config, fuse, fresh_seed):
    """float64: each side computes w (lse - z_target) with O(V) roundings of relative size eps in
    the log-sum-exp and a few more in the subtraction and the weighting, so per token
    |patched - original| <= 2 eps w_max (2 zmax + log V + V + 4), w_max = 1/sampling_eps = 1000
    bounding every weight (1/t, T (1/T)/t or -log1p(-exp(-sigma_min)))."""
    seed = fresh_seed % 2**31
    ref, (first, fused), zmax, orig, new = _loss_pair(
        lambda: _mdlm(_dit(), **config), seed, fuse_output_layer=fuse
    )
    w_max = 1000.0
    tol = 2 * EPS64 * w_max * (2 * zmax + math.log(V_LOSS) + V_LOSS + 4)
    for out in (first, fused):
        assert out.nlls.dtype == torch.float64
        assert ((out.nlls - ref.nlls).abs() <= tol).all(), (out.nlls - ref.nlls).abs().max()
        assert (out.nlls[ref.nlls == 0] == 0).all()  # unmasked and padded positions
    assert new._mdfast_state.network.valid is (fuse is None)
    # gradients: each entry sums at most B L V such terms; bound relative to the largest entry
    for model, out in ((orig, ref), (new, fused)):
        model.zero_grad()
        out.loss.backward()
    for (name, p), q in zip(orig.named_parameters(), new.parameters(), strict=True):
        bound = 16 * EPS64 * B_LOSS * L_LOSS * V_LOSS * w_max * p.grad.abs().max()
        assert (q.grad - p.grad).abs().max() <= bound, name


def test_discrete_time_at_t_equal_1_over_T_is_finite_where_mdlm_is_nan():
    """MDLM's two-term KL evaluates 0/0 at t = 1/T (reachable when T < 1/sampling_eps); its
    second term is 0 * (log 1 - log 1), so the loss is T (1/T) / t (-log p), which the patch
    returns: the continuous-time term at the same t (weight dsigma / expm1(sigma) = 1/t, equal to
    float32 rounding of t)."""
    models = [_mdlm(_dit(dropout=0.0), T=10) for _ in range(2)] + [_mdlm(_dit(dropout=0.0))]
    orig, new, cont = models
    integration.patch(new)
    integration.patch(cont)
    new._sample_t = orig._sample_t = lambda n, device: torch.full((n,), 0.05)  # -> t = 1/T
    cont._sample_t = lambda n, device: torch.full((n,), 0.05) * 0 + 1 / 10
    x0 = torch.randint(0, V_LOSS - 1, (B_LOSS, L_LOSS), generator=torch.Generator().manual_seed(1))
    out = []
    for model in models:
        torch.manual_seed(0)
        out.append(model._forward_pass_diffusion(x0))
    assert torch.isnan(out[0]).all()
    assert torch.isfinite(out[1]).all() and (out[1] > 0).any()
    assert torch.allclose(out[1], out[2], rtol=4 * torch.finfo(torch.float32).eps, atol=0)


@pytest.mark.parametrize("fuse", [False, True])
def test_patched_loss_equals_original_bf16(fuse, fresh_seed):
    """bf16 logits (MDLM's DiT runs under bf16 autocast). The original rounds log-sum-exp and
    z_target - lse to bf16 (unit roundoff u = 2^-8): error <= w u (|lse| + |z_t - lse|) (1 + u)
    <= w u (3 zmax + 2 log V)(1 + u). The patched loss reads the same bf16 logits and accumulates
    in fp32; fused, it recomputes the logits without rounding them to bf16 (each within u |z| of
    the original's), moving lse and z_t by <= u zmax each: + 2 w u zmax. fp32 accumulation adds
    at most w (V + 4) eps32 (zmax + log V)."""
    seed = fresh_seed % 2**31
    ref, outs, zmax, _, new = _loss_pair(
        lambda: _mdlm(_dit(torch.float32, autocast=torch.bfloat16)),
        seed,
        fuse_output_layer=fuse,
    )
    w = (1 / _row_t(new, seed))[:, None]  # log-linear: dsigma / expm1(sigma) = 1/t
    eps32 = torch.finfo(torch.float32).eps
    tol = w * U_BF16 * (3 * zmax + 2 * math.log(V_LOSS)) * (1 + U_BF16)
    tol = tol + w * (V_LOSS + 4) * eps32 * (zmax + math.log(V_LOSS))
    if fuse:
        tol = tol + 2 * w * U_BF16 * zmax
    for out in outs:
        assert out.nlls.dtype == torch.float32
        err = (out.nlls.double() - ref.nlls.double()).abs()
        assert (err <= tol).all(), (err - tol).max()
    assert new._mdfast_state.network.valid is fuse


def test_patched_class_serves_instances_like_an_instance_patch(fresh_seed):
    seed = fresh_seed % 2**31
    x0 = torch.randint(0, V_LOSS - 1, (B_LOSS, L_LOSS))
    am = torch.ones(B_LOSS, L_LOSS)
    integration.patch(MDLMDiffusion)
    a = _mdlm(_dit())
    torch.manual_seed(seed)
    la = a._loss(x0, am)
    integration.unpatch(MDLMDiffusion)
    b = integration.patch(_mdlm(_dit()))
    torch.manual_seed(seed)
    lb = b._loss(x0, am)
    assert torch.equal(la.nlls, lb.nlls)


# ---------------------------------------------------------------------------------------------
# sampling: exact laws of the MDLM chains
# ---------------------------------------------------------------------------------------------

L_S, K_S = 3, 3  # positions, tokens
MASK_S = K_S
V_S = K_S + 1
STATES = torch.tensor(list(itertools.product(range(V_S), repeat=L_S)))
POWERS = V_S ** torch.arange(L_S - 1, -1, -1)


class TableBackbone(nn.Module):
    """A denoiser whose logits at each position depend on the whole input: a random table over
    the V^L states (or, ``fusable``, random features there through ``output_layer.linear``), plus
    ``sigma * slope`` when ``time_slope``. Counts its calls and keeps the sigmas it saw."""

    def __init__(self, fusable=False, time_slope=0.0, seed=11, hidden=8):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = len(STATES)
        self.fusable = fusable
        if fusable:
            self.feat = nn.Parameter(torch.randn(n, L_S, hidden, generator=g))
            self.output_layer = nn.Module()
            self.output_layer.linear = nn.Linear(hidden, V_S)
            with torch.no_grad():
                self.output_layer.linear.weight.copy_(torch.randn(V_S, hidden, generator=g))
                self.output_layer.linear.bias.copy_(torch.randn(V_S, generator=g))
        else:
            self.table = nn.Parameter(torch.randn(n, L_S, V_S, generator=g) * 1.5)
        self.time_slope = time_slope
        self.slope = nn.Parameter(torch.randn(L_S, V_S, generator=g) * time_slope)
        self.calls = 0
        self.sigmas: list[torch.Tensor] = []

    def forward(self, x, sigma):
        self.calls += 1
        self.sigmas.append(sigma.detach().clone())
        sid = (x * POWERS).sum(-1)
        logits = self.output_layer.linear(self.feat[sid]) if self.fusable else self.table[sid]
        if self.time_slope:  # a post-processed output: not fusable
            logits = logits + sigma.reshape(-1, 1, 1) * self.slope
        return logits


def _token_probs(backbone, sigma: float = 0.0) -> torch.Tensor:
    """p[state, l, v]: the denoiser's x0 distribution at each position (mask class excluded)."""
    with torch.no_grad():
        z = backbone(STATES, torch.full((len(STATES),), sigma)).double()
    z[..., MASK_S] = -math.inf
    return torch.softmax(z, dim=-1)


def _step_matrix(p: torch.Tensor, q: float, sigma: float) -> torch.Tensor:
    """P[state, state']: every masked position unmasks with probability q to a token from p,
    every decoded one remasks with probability sigma, independently."""
    per = torch.zeros(len(STATES), L_S, V_S, dtype=torch.float64)
    masked = STATES == MASK_S
    per[masked] = q * p[masked]
    per[..., MASK_S] += masked * (1 - q)
    decoded = ~masked
    per[decoded, STATES[decoded]] = 1 - sigma
    per[..., MASK_S] += decoded * sigma
    joint = per[:, 0]
    for pos in range(1, L_S):
        joint = (joint[:, :, None] * per[:, pos, None, :]).reshape(len(STATES), -1)
    return joint


def _chain_law(alphas, probs_at, final_probs) -> torch.Tensor:
    """Law over final sequences: the chain from all-mask through steps ``alphas`` = [(alpha_t,
    alpha_s)] with x0 distributions ``probs_at(i)``, then MDLM's noise removal (argmax)."""
    dist = torch.zeros(len(STATES), dtype=torch.float64)
    dist[-1] = 1.0  # all masked
    for i, (a_t, a_s) in enumerate(alphas):
        q = 1.0 if a_t >= 1 else (a_s - a_t) / (1 - a_t)
        dist = dist @ _step_matrix(probs_at(i), q, 0.0)
    final = torch.where(STATES == MASK_S, final_probs.argmax(-1), STATES)
    return torch.zeros(len(STATES), dtype=torch.float64).index_add(
        0, (final * POWERS).sum(-1), dist
    )


def _draw_counts(x: torch.Tensor) -> torch.Tensor:
    assert (x != MASK_S).all()
    return torch.bincount((x * POWERS).sum(-1), minlength=len(STATES))


def _sampler_model(cls=MDLMDiffusion, backbone=None, batch=4000, steps=4, config=None, **kw):
    backbone = TableBackbone() if backbone is None else backbone
    if config is None:
        config = mdlm_config(length=L_S, eval_batch_size=batch, steps=steps, **kw)
    return cls(config, backbone, V_S)


def _grid(steps, eps=1e-5):
    ts = torch.linspace(1, eps, steps + 1)  # float32, as MDLM's _sample builds it
    return [float(t) for t in ts[:-1]], (1 - eps) / steps


@pytest.mark.parametrize("patched", [False, True], ids=["original", "patched"])
@pytest.mark.parametrize("fusable", [False, True], ids=["logits", "fused-head"])
@pytest.mark.parametrize("predictor", ["ddpm_cache", "ddpm"])
def test_mdlm_sample_draws_its_chains_law(predictor, fusable, patched, fresh_seed):
    steps = 4
    model = _sampler_model(
        backbone=TableBackbone(fusable=fusable), steps=steps, predictor=predictor
    )
    if patched:
        integration.patch(model)
    ts, dt = _grid(steps)
    eps_noise = model.noise.eps
    if predictor == "ddpm_cache":  # move chance t
        alphas = [(1 - t, 1 - (t - dt)) for t in ts]
    else:  # move chance 1 - exp(-sigma(t)) = (1 - eps) t
        alphas = [(1 - (1 - eps_noise) * t, 1 - (1 - eps_noise) * (t - dt)) for t in ts]
    p = _token_probs(model.backbone)
    law = _chain_law(alphas, lambda i: p, p)
    torch.manual_seed(fresh_seed % 2**31)
    x = model._sample()
    pval = _chi2_p(_draw_counts(x), law)
    assert pval > P_FAIL, pval
    if patched and fusable:
        assert model._mdfast_state.network.valid


@pytest.mark.parametrize("post_processed", [False, True])
def test_output_layer_fused_only_where_valid(post_processed):
    """A backbone that changes the output layer's result afterwards is never fused; one that
    returns it is, after the first call checks it (which itself runs unfused)."""
    backbone = TableBackbone(fusable=True, time_slope=1.0 if post_processed else 0.0)
    model = _sampler_model(backbone=backbone, batch=16, steps=4)
    integration.patch(model)
    network = model._mdfast_state.network
    assert network.linear is backbone.output_layer.linear and network.valid is None
    torch.manual_seed(0)
    model._sample()
    assert network.valid is not post_processed
    x0 = torch.randint(0, K_S, (8, L_S))
    model._loss(x0, torch.ones(8, L_S)).loss.backward()
    assert backbone.output_layer.linear.weight.grad is not None


def test_time_conditioned_cached_sampler_falls_back_and_warns_once(fresh_seed):
    """With time conditioning the network is evaluated at every step that unmasks, at that
    step's sigma (never reused), the chain keeps its law, and one warning says so."""
    steps = 4
    backbone = TableBackbone(time_slope=3.0)
    model = _sampler_model(backbone=backbone, steps=steps, time_conditioning=True)
    integration.patch(model)
    ts, dt = _grid(steps)
    sigmas = [float(model.noise(torch.tensor(t))[0]) for t in ts]
    law = _chain_law(
        [(1 - t, 1 - (t - dt)) for t in ts],
        lambda i: _token_probs(backbone, sigmas[i]),
        _token_probs(backbone, float(model.noise(torch.tensor(1e-5))[0])),
    )
    backbone.sigmas.clear()
    torch.manual_seed(fresh_seed % 2**31)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = model._sample()
    ours = [w for w in caught if "time_conditioning=True" in str(w.message)]
    assert len(ours) == 1
    assert _chi2_p(_draw_counts(x), law) > P_FAIL
    seen = [float(s[0]) for s in backbone.sigmas[:-1]]  # the last call is noise removal
    assert len(seen) == len(set(seen)) == steps  # B = 4000: every step unmasks something
    assert seen == pytest.approx(sigmas, rel=1e-6)


def test_cache_reuse_runs_the_network_only_when_a_token_unmasks(fresh_seed):
    """B = 1, many steps: the patched loop calls the network once per step that unmasks a token
    (L at most), the original once per step after a change (and on the first)."""
    torch.manual_seed(fresh_seed % 2**31)
    for patched in (False, True):
        backbone = TableBackbone()
        model = _sampler_model(backbone=backbone, batch=1, steps=64)
        if patched:
            integration.patch(model)
        step = model._ddpm_caching_update
        changes = []

        def spy(x, t, dt, p_x0=None, step=step, changes=changes):
            cache, x_next = step(x, t, dt, p_x0)
            changes.append(not torch.equal(x_next, x))
            return cache, x_next

        model._ddpm_caching_update = spy
        model._sample()
        loop_calls = backbone.calls - 1  # minus the noise-removal forward
        n_changes = sum(changes)
        if patched:
            assert loop_calls == n_changes <= L_S
        else:
            assert loop_calls == 1 + sum(changes[:-1])


# ---------------------------------------------------------------------------------------------
# a cached step reads no logits
# ---------------------------------------------------------------------------------------------


class Forbidden(nn.Module):
    """A backbone that must not run."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x, sigma):
        raise AssertionError("the network ran on a cached step")


@pytest.mark.parametrize("cls", [MDLMDiffusion, ReMDMDiffusion])
def test_cached_step_reads_no_logits(cls, fresh_seed):
    B, L, V = 64, 32, 50
    config = (
        remdm_config(length=L, sampler="remdm-cap", eta=0.05)
        if cls is ReMDMDiffusion
        else mdlm_config(length=L)
    )
    model = cls(config, Forbidden(), V)
    integration.patch(model)
    g = torch.Generator().manual_seed(fresh_seed % 2**31)
    x = torch.randint(0, V - 1, (B, L), generator=g)
    x[torch.rand(B, L, generator=g) < 0.6] = V - 1
    probs = torch.softmax(torch.randn(B, L, V, generator=g), -1)
    probs[..., V - 1] = 0
    t = torch.full((B, 1), 0.5)

    def step(cache, dt, seed):
        torch.manual_seed(seed)
        out = model._ddpm_caching_update(x, t, dt, p_x0=cache)
        return out[0], out[1]

    # a step in which nothing can change: an all-NaN cache is neither read nor dropped
    poisoned = DenoiserCache.from_probs(x, torch.full_like(probs, float("nan")))
    if cls is ReMDMDiffusion:
        model.config.sampling.eta = 0.0
    cache, x_next = step(poisoned, 1e-12, 1)
    assert torch.equal(x_next, x)
    assert cache is poisoned
    if cls is ReMDMDiffusion:
        model.config.sampling.eta = 0.05
    # a step that unmasks (and, ReMDM, remasks) some positions: poisoning every other row of the
    # cache changes nothing
    seed = fresh_seed % 2**31
    _, clean = step(DenoiserCache.from_probs(x, probs), 0.2, seed)
    unmasked = (x == V - 1) & (clean != V - 1)
    assert unmasked.any() and (clean != x).sum() < x.numel() // 2
    dirty = probs.clone()
    dirty[~unmasked] = float("nan")
    _, again = step(DenoiserCache.from_probs(x, dirty), 0.2, seed)
    assert torch.equal(again, clean)


# ---------------------------------------------------------------------------------------------
# ReMDM strategies: one step against the exact posterior
# ---------------------------------------------------------------------------------------------

L_R, K_R = 5, 6
V_R = K_R + 1
MASK_R = K_R
N_R = 6000
X_ROW = torch.tensor([2, MASK_R, 4, MASK_R, MASK_R])  # decoded at positions 0 and 2
CONF_ROW = torch.tensor([-0.2, -math.inf, -0.7, -math.inf, -math.inf])


class RowBackbone(nn.Module):
    """Fixed random logits per position (the input is fixed in these one-step tests)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.z = nn.Parameter(torch.randn(L_R, V_R, generator=g) * 1.5)

    def forward(self, x, sigma):
        return self.z.expand(x.shape[0], -1, -1).clone()


def _remdm_cases():
    return [
        ("mdlm", {}, 0.6, 0.1),
        ("mdlm", {"nucleus_p": 0.9}, 0.6, 0.1),
        ("remdm-cap", {"eta": 0.3}, 0.6, 0.1),
        ("remdm-cap", {"eta": 0.3, "nucleus_p": 0.9}, 0.2, 0.15),
        ("remdm-rescale", {"eta": 0.5}, 0.4, 0.1),
        ("remdm-conf", {}, 0.5, 0.2),
        ("forward-backward", {}, 0.4, 0.1),
        ("remdm-loop", {"eta": 0.2, "t_on": 0.55, "t_off": 0.05, "alpha_on": 0.7}, 0.8, 0.1),
        ("remdm-loop", {"eta": 0.2, "t_on": 0.55, "t_off": 0.05, "alpha_on": 0.7}, 0.3, 0.1),
        ("remdm-loop", {"eta": 0.2, "t_on": 0.55, "t_off": 0.05, "alpha_on": 0.7}, 0.04, 0.01),
        ("dfm", {"nucleus_p": 0.9}, 0.7, None),
        ("dfm", {"nucleus_p": 0.9}, 1.0, None),
    ]


def _remdm_posterior(sampler, s, t, dt):
    """(alpha_t, alpha_s, sigma per position) of ReMDM's step at t (float64 math)."""
    sigma = torch.zeros(L_R, dtype=torch.float64)
    if sampler == "dfm":
        if t == 1.0:
            return 0.0, 1 / s.steps, sigma
        dt, b = remask_rates.dfm_step(t, s.steps)
        a_t, a_s = 1 - t, 1 - (t - dt)
        return a_t, a_s, sigma + b * (a_s / a_t - 1)
    a_t, a_s = 1 - t, 1 - (t - dt)
    if sampler == "remdm-loop":
        if t > s.t_on:
            a_t, a_s = (1 - t) * s.alpha_on / (1 - s.t_on), (1 - t + dt) * s.alpha_on / (1 - s.t_on)
        elif t <= s.t_off:
            a_t = 1 - t * (1 - s.alpha_on) / s.t_off
            a_s = 1 - (t - dt) * (1 - s.alpha_on) / s.t_off
        else:
            a_t = a_s = s.alpha_on
            sigma += s.eta
    elif sampler == "remdm-cap":
        sigma += remask_rates.sigma_cap(a_t, a_s, s.eta)
    elif sampler == "remdm-rescale":
        sigma += remask_rates.sigma_rescale(a_t, a_s, s.eta)
    elif sampler == "forward-backward":
        sigma += (a_s - a_t) / a_t
    elif sampler == "remdm-conf":
        sigma = torch.softmax(CONF_ROW.double(), 0) * remask_rates.sigma_max(a_t, a_s)
    return a_t, a_s, sigma


@pytest.mark.parametrize("patched", [False, True], ids=["original", "patched"])
@pytest.mark.parametrize(("sampler", "extra", "t", "dt"), _remdm_cases())
def test_remdm_step_law(sampler, extra, t, dt, patched, fresh_seed):
    config = remdm_config(
        length=L_R,
        sampler="mdlm" if sampler == "dfm" else sampler,
        steps=8,
        dfm=sampler == "dfm",
        **extra,
    )
    model = ReMDMDiffusion(config, RowBackbone(), V_R)
    if patched:
        integration.patch(model)
    x = X_ROW.expand(N_R, -1).clone()
    tt = torch.full((N_R, 1), t)
    torch.manual_seed(fresh_seed % 2**31)
    if sampler == "dfm":
        _, x_next, _ = model._dfm_caching_update(x, tt)
    else:
        conf = CONF_ROW.to(torch.bfloat16).expand(N_R, -1).clone()
        _, x_next, conf_next = model._ddpm_caching_update(x, tt, dt, conf=conf)
    a_t, a_s, sigma = _remdm_posterior(sampler, config.sampling, t, dt)
    probs = torch.softmax(model.backbone.z.detach().double().masked_fill(
        torch.arange(V_R) == MASK_R, -math.inf), -1)  # fmt: skip
    if config.sampling.nucleus_p < 1:
        probs = seed_nucleus(probs, config.sampling.nucleus_p)
    for pos in range(L_R):
        law = torch.zeros(V_R, dtype=torch.float64)
        if X_ROW[pos] == MASK_R:
            q = min(1.0, max(0.0, (a_s - (1 - float(sigma[pos])) * a_t) / (1 - a_t)))
            law += q * probs[pos]
            law[MASK_R] = 1 - q
        else:
            law[X_ROW[pos]] = 1 - float(sigma[pos])
            law[MASK_R] = float(sigma[pos])
        counts = torch.bincount(x_next[:, pos], minlength=V_R)
        pval = _chi2_p(counts, law)
        assert pval > P_FAIL, (pos, pval)
    if sampler == "remdm-conf":  # confidence bookkeeping: -p(token) on unmask, -inf on remask
        newly = (x == MASK_R) & (x_next != MASK_R)
        cols = torch.arange(L_R).expand(N_R, -1)
        p_tok = probs[cols, x_next.clamp(max=K_R - 1)].to(torch.bfloat16).float()
        # both sides round a probability to bf16: one bf16 ulp (2u) apart at most
        assert torch.allclose(conf_next[newly].float(), -p_tok[newly], rtol=2 * U_BF16, atol=0)
        assert torch.isinf(conf_next[x_next == MASK_R]).all()
        kept = (x != MASK_R) & (x_next != MASK_R)
        assert torch.equal(conf_next[kept], conf[kept])


@pytest.mark.parametrize(
    "extra",
    [
        {"sampler": "remdm-conf", "nucleus_p": 0.9},
        {"sampler": "remdm-cap", "eta": 0.02},
        {"sampler": "remdm-loop", "eta": 0.02, "t_on": 0.55, "t_off": 0.05, "alpha_on": 0.9},
        {"sampler": "mdlm", "dfm": True, "nucleus_p": 0.9},
    ],
    ids=lambda e: e["sampler"] + ("-dfm" if e.get("dfm") else ""),
)
def test_remdm_sample_loop_runs_patched(extra):
    """ReMDM's own _sample loop drives the patched steps to complete sequences."""
    model = ReMDMDiffusion(
        remdm_config(length=L_R, eval_batch_size=8, steps=32, **extra), RowBackbone(), V_R
    )
    integration.patch(model)
    torch.manual_seed(0)
    x = model._sample()
    assert x.shape == (8, L_R) and (x != MASK_R).all()


# ---------------------------------------------------------------------------------------------
# _sample_categorical
# ---------------------------------------------------------------------------------------------


def test_sample_categorical_is_exact(fresh_seed):
    integration.patch(MDLMDiffusion)
    fn = mdlm_module._sample_categorical
    assert fn is not mdlm_module._sample_categorical.__wrapped__
    p = torch.tensor([3e-5, 0.2, 0.0, 0.5, 1.3, 1e-3], dtype=torch.float32)  # unnormalised
    torch.manual_seed(fresh_seed % 2**31)
    draws = fn(p.expand(4, 50_000, -1).clone())
    assert draws.shape == (4, 50_000) and draws.dtype == torch.int64
    pval = _chi2_p(torch.bincount(draws.reshape(-1), minlength=6), p.double())
    assert pval > P_FAIL
    assert fn(p[None], dtype=torch.float64).shape == (1,)  # MDM-Prime passes a dtype
    with pytest.raises(ValueError, match="no class to draw"):
        fn(torch.zeros(2, 6))


# ---------------------------------------------------------------------------------------------
# detection, left-alone parameterizations, unpatch
# ---------------------------------------------------------------------------------------------


class Bd3lmLike(MDLMDiffusion):
    """BD3-LM's signatures (block diffusion: its contracts differ from MDLM's)."""

    def _forward_pass_diffusion(self, x0, t=None, sampling_eps_min=None, sampling_eps_max=None):
        return super()._forward_pass_diffusion(x0)

    def forward(self, x, sigma, sample_mode=False, store_kv=False):
        return super().forward(x, sigma)


class PrimeTextLike(MDLMDiffusion):
    """MDM-Prime's text Diffusion: MDLM's loss methods, a cached update with ``return_x0``."""

    def _ddpm_caching_update(self, x, t, dt, p_x0=None, return_x0=False):
        return super()._ddpm_caching_update(x, t, dt, p_x0)


def test_unrecognised_objects_raise_and_patch_nothing():
    with pytest.raises(TypeError, match=r"not a torch\.nn\.Module"):
        integration.patch(object())
    with pytest.raises(TypeError, match=r"no method _forward_pass_diffusion\(\)"):
        integration.patch(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"_forward_pass_diffusion\(self, x0, t, sampling_eps_min"):
        integration.patch(Bd3lmLike)
    with pytest.raises(TypeError, match=r"forward\(self, x, sigma, sample_mode, store_kv\)"):
        integration.patch(Bd3lmLike, loss=False)
    assert not integration.is_patched(Bd3lmLike)
    with pytest.raises(TypeError, match=r"_ddpm_caching_update\(self, x, t, dt, p_x0, return_x0\)"):
        integration.patch(PrimeTextLike)
    integration.patch(PrimeTextLike, sampling=False)  # the loss part matches
    assert PrimeTextLike._ddpm_caching_update is PrimeTextLike.__dict__["_ddpm_caching_update"]
    integration.unpatch(PrimeTextLike)

    model = _mdlm(_dit(dropout=0.0))
    del model.noise
    with pytest.raises(TypeError, match=r"no attribute.*noise") as info:
        integration.patch(model)
    assert "Found:" in str(info.value) and "mask_index" in str(info.value)
    assert "_forward_pass_diffusion" not in model.__dict__

    prime = _mdlm(_dit(dropout=0.0))
    prime.config.prime = mdlm_module.namespace({"target_length": 2})
    with pytest.raises(TypeError, match="target_length = 2"):
        integration.patch(prime)

    remdm = ReMDMDiffusion(remdm_config(length=4, sampler="remdm-fancy"), RowBackbone(), V_R)
    with pytest.raises(TypeError, match="remdm-fancy"):
        integration.patch(remdm)
    integration.patch(remdm, sampling=False)  # the loss path does not read the sampler

    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        integration.patch(_sampler_model(), fuse_output_layer=True)
    with pytest.raises(ValueError, match="is not patched"):
        integration.unpatch(_mdlm(_dit(dropout=0.0)))


def test_patched_class_checks_each_instance_on_first_use():
    integration.patch(MDLMDiffusion)
    model = _mdlm(_dit(dropout=0.0))
    model.mask_index = -1
    with pytest.raises(TypeError, match=r"mask_index is -1.*Its class is patched"):
        model._forward_pass_diffusion(torch.zeros(2, L_LOSS, dtype=torch.long))


def test_other_parameterizations_are_left_alone(fresh_seed):
    """sedd / d3pm / ar: one warning, then the original code runs."""
    orig = _mdlm(_dit(dropout=0.0))
    orig.parameterization = "d3pm"
    new = _mdlm(_dit(dropout=0.0))
    new.parameterization = "d3pm"
    with pytest.warns(UserWarning, match="parameterization='d3pm' is left alone"):
        integration.patch(new)
    x0 = torch.randint(0, V_LOSS - 1, (2, L_LOSS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        for model in (orig, new):
            torch.manual_seed(fresh_seed % 2**31)
            model.out = model._forward_pass_diffusion(x0)
    assert torch.equal(orig.out, new.out)


def test_unpatch_restores_the_originals():
    names = [
        "_forward_pass_diffusion",
        "_subs_parameterization",
        "_ddpm_update",
        "_ddpm_caching_update",
        "_dfm_caching_update",
    ]
    before = {n: ReMDMDiffusion.__dict__.get(n) for n in names}
    inherited = {n: getattr(ReMDMDiffusion, n) for n in names}
    categorical = remdm_module._sample_categorical

    integration.patch(ReMDMDiffusion)
    model = ReMDMDiffusion(remdm_config(length=4), RowBackbone(), V_R)
    assert integration.is_patched(ReMDMDiffusion) and integration.is_patched(model)
    assert all(getattr(ReMDMDiffusion, n) is not inherited[n] for n in names)
    assert remdm_module._sample_categorical is not categorical
    with pytest.raises(ValueError, match="the patch is on class"):
        integration.unpatch(model)
    integration.unpatch(ReMDMDiffusion)
    assert {n: ReMDMDiffusion.__dict__.get(n) for n in names} == before
    assert all(getattr(ReMDMDiffusion, n) is inherited[n] for n in names)
    assert remdm_module._sample_categorical is categorical
    assert not integration.is_patched(model)

    # instances: the replacement module function stays until the last patch is undone
    a = ReMDMDiffusion(remdm_config(length=4), RowBackbone(), V_R)
    b = ReMDMDiffusion(remdm_config(length=4), RowBackbone(), V_R)
    integration.patch(a)
    integration.patch(a)  # a second patch does nothing
    integration.patch(b)
    integration.unpatch(a)
    assert remdm_module._sample_categorical is not categorical
    assert a._ddpm_caching_update.__func__ is inherited["_ddpm_caching_update"]
    assert "_mdfast_state" not in a.__dict__
    integration.unpatch(b)
    assert remdm_module._sample_categorical is categorical
    assert not any(n in b.__dict__ for n in names)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def test_patched_model_round_trips_a_lightning_checkpoint(tmp_path, fresh_seed):
    """Lightning's ModelCheckpoint writes ``torch.save`` of a dict whose ``state_dict`` is the
    LightningModule's; a patched model's is the original's (no added parameters or buffers), it
    loads into an unpatched model and into mdfast's own loader, and the reloaded model computes
    the same loss."""
    model = _mdlm(_dit(dropout=0.0))
    integration.patch(model)
    x0 = torch.randint(0, V_LOSS - 1, (B_LOSS, L_LOSS))
    am = torch.ones(B_LOSS, L_LOSS)
    for _ in range(2):  # two SGD steps through the patched loss
        model.zero_grad()
        model._loss(x0, am).loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 1e-2 * p.grad
    fresh = _mdlm(_dit(dropout=0.0, seed=99))
    assert list(model.state_dict()) == list(fresh.state_dict())
    ckpt = {
        "epoch": 0,
        "global_step": 2,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": model.state_dict(),
        "optimizer_states": [],
        "lr_schedulers": [],
        "hyper_parameters": {},
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)

    loaded = torch.load(path, map_location="cpu", weights_only=False)
    fresh.load_state_dict(loaded["state_dict"], strict=True)
    for (name, p), q in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    integration.patch(fresh)
    fresh._loss(x0, am)  # the first call validates the fused output layer, as it did for model
    seed = fresh_seed % 2**31
    torch.manual_seed(seed)
    a = model._loss(x0, am).nlls
    torch.manual_seed(seed)
    b = fresh._loss(x0, am).nlls
    assert torch.equal(a, b)

    backbone = load_mdlm(path, config=model.backbone.config)
    for (name, p), q in zip(
        model.backbone.state_dict().items(), backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(p.to(q.dtype), q), name
