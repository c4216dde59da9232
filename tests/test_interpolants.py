"""Discrete interpolants: κ schedules, the objective against a float64 reference and its
corruption law, the Euler step's law (chi-square against the closed form), MaskGIT's reveal
counts, classifier-free guidance, bad input, the CLI, and the CPU-scale table at tiny settings."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from mdfast import schedules
from mdfast.diffusion import Interpolant
from mdfast.models import UViT
from mdfast.rng import PhiloxStream
from mdfast.sampling import euler, guided_logits, maskgit, sample, sampler_names
from mdfast.sampling.interpolant import (
    InterpolantSettings,
    euler_step,
    maskgit_step,
    reveal_counts,
)

P_FAIL = 1e-6  # chi-square p-value below which a law is rejected


def _chi2_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square p-value of ``counts`` against the law ``probs``; cells expecting < 5 draws are
    pooled into one."""
    counts, probs = counts.double(), probs.double()
    assert int(counts[probs == 0].sum()) == 0, "a draw outside the law's support"
    exp = probs / probs.sum() * counts.sum()
    big = exp >= 5
    obs_c = torch.cat([counts[big], counts[~big & (probs > 0)].sum().reshape(1)])
    exp_c = torch.cat([exp[big], exp[~big & (probs > 0)].sum().reshape(1)])
    if exp_c[-1] < 5:
        obs_c, exp_c = obs_c[:-1], exp_c[:-1]
        exp_c = exp_c / exp_c.sum() * obs_c.sum()
    assert len(exp_c) >= 2, "too few draws for a chi-square test"
    return float(stats.chisquare(obs_c.numpy(), exp_c.numpy()).pvalue)


class FixedLogits(torch.nn.Module):
    """A denoiser whose logits do not depend on x: ``table`` [L, V] for every sample; records
    every input it sees."""

    def __init__(self, table: torch.Tensor, shape):
        super().__init__()
        self.table, self.shape, self.seen = table, tuple(shape), []

    def forward(self, x, **cond):
        self.seen.append((x.clone(), {k: v.clone() for k, v in cond.items()}))
        b = x.shape[0]
        return self.table.expand(b, *self.table.shape).reshape(b, *self.shape, -1).contiguous()


class Recording(torch.nn.Module):
    """A model wrapper that records every input x."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []
        self.null_condition = model.null_condition

    def forward(self, x, **cond):
        self.seen.append(x.clone())
        return self.model(x, **cond)


def _uvit(seed, **kw):
    torch.manual_seed(seed)
    m = UViT("tiny", **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


# --- schedules --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(schedules.KAPPA_SCHEDULES))
def test_kappa_schedules(name):
    s = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    k = schedules.kappa(s, name)
    ends = schedules.kappa(torch.tensor([0.0, 1.0], dtype=torch.float64), name)
    torch.testing.assert_close(ends, torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert (k.diff() > 0).all() and (k > 0).all() and (k < 1).all()
    ss = s.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(schedules.kappa(ss, name).sum(), ss)
    torch.testing.assert_close(schedules.dkappa(s, name), g)
    torch.testing.assert_close(schedules.kappa_rate(s, name), g / (1 - k))


def test_kappa_closed_forms_and_names():
    s = torch.rand(20, dtype=torch.float64) * 0.9 + 0.05
    pi = math.pi
    closed = {
        "linear": s,
        "cosine": 1 - torch.cos(pi * s / 2),
        "sine": torch.sin(pi * s / 2),
        "arccos": 1 - 2 / pi * torch.acos(s),
        "arcsin": 2 / pi * torch.asin(s),
        "root": s.sqrt(),
        "quadratic": s**2,
        "cubic": -2 * s**3 + 3 * s**2 + 2 * (s**3 - 2 * s**2 + s) + 0.5 * (s**3 - s**2),
    }
    for name, want in closed.items():
        torch.testing.assert_close(schedules.kappa(s, name), want)
    torch.testing.assert_close(schedules.kappa_rate(s, "linear"), 1 / (1 - s))
    torch.testing.assert_close(schedules.kappa(s, "arc_cosine"), closed["arccos"])
    with pytest.raises(ValueError, match=r"argument 'kappa' must be one of .*'quadratic'"):
        schedules.kappa(s, "sqrt")
    with pytest.raises(ValueError, match="argument 'kappa'"):
        Interpolant(torch.nn.Identity(), mask_index=3, kappa="sqrt")


# --- objective --------------------------------------------------------------------------------


class _Recorder(torch.nn.Module):
    """Float64 logits from a fixed random table indexed by (position, token), with the time and
    condition it was given recorded."""

    config = type("C", (), {"time_cond": True, "vocab_size": 7})()

    def __init__(self, length, vocab, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(
            torch.randn(length, vocab, vocab, generator=g, dtype=torch.float64)
        )
        self.seen = {}

    def forward(self, x, y=None, t=None):
        self.seen = {"x": x.clone(), "y": y, "t": t}
        pos = torch.arange(x.shape[1])
        return self.w[pos[None, :], x]  # [B, L, V]


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"elbo": True, "kappa": "cosine"},
        {"elbo": True, "sigmoid_shift": 0.5, "kappa": "cubic", "coupling": "ccoupling"},
        {"mask_ce": False, "smooth": 0.3},
    ],
)
def test_objective_equals_float64_reference(opts, fresh_seed):
    V, L, B, mask = 7, 12, 16, 6
    model = _Recorder(L, V, fresh_seed)
    obj = Interpolant(model, mask_index=mask, num_classes=3, p_uncond=0.5, **opts)
    g = torch.Generator().manual_seed(fresh_seed)
    x1 = torch.randint(0, mask, (B, L), generator=g)
    y = torch.randint(0, 3, (B,), generator=g)
    loss, _ = obj({"input_ids": x1, "label": y})
    loss.backward()
    xs, s = model.seen["x"], model.seen["t"].double()
    assert ((model.seen["y"] == y) | (model.seen["y"] == 3)).all()
    # float64 reference: log-softmax without the mask class, CE against x1
    z = model.w.detach()[torch.arange(L)[None, :], xs]
    keep = torch.arange(V) != mask
    logp = torch.log_softmax(z[..., keep], dim=-1)
    ce = -logp.gather(-1, x1[..., None]).squeeze(-1)  # targets < mask keep their index
    if obj.mask_ce:
        m = (xs == mask).double()
        w = m / m.sum().clamp_min(1)
        if obj.elbo:
            k = schedules.kappa(s, obj.kappa)
            w = w * (schedules.dkappa(s, obj.kappa) / (1 - k))[:, None]
            if obj.sigmoid_shift is not None:
                w = w * torch.sigmoid(torch.log(k / (1 - k)) - obj.sigmoid_shift)[:, None]
    else:
        w = torch.full_like(ce, 1.0 / ce.numel())
    want = (w * ce).sum()
    torch.testing.assert_close(loss.detach(), want, rtol=1e-6, atol=1e-9)
    assert model.w.grad is not None and model.w.grad.abs().sum() > 0


def test_corruption_laws(fresh_seed):
    """x_s per token: x1 w.p. κ, x0 otherwise (ucoupling: the mask; ccoupling: x1 w.p. 0.2),
    and with smoothing c every class gets ε = √(c s(1−s)) more mass before normalising."""
    torch.manual_seed(fresh_seed)
    V, mask, n = 6, 5, 60000
    x1 = torch.full((n, 1), 2)
    s = torch.full((n,), 0.3)
    k = float(schedules.kappa(torch.tensor(0.3, dtype=torch.float64), "cosine"))
    for coupling, smooth in (("ucoupling", 0.0), ("ccoupling", 0.0), ("ucoupling", 0.5)):
        obj = Interpolant(torch.nn.Identity(), mask_index=mask, kappa="cosine",
                          coupling=coupling, smooth=smooth)  # fmt: skip
        xs = obj.corrupt(obj.source(x1), x1, s, V)
        counts = torch.bincount(xs.flatten(), minlength=V)
        law = torch.zeros(V, dtype=torch.float64)
        p_x0_mask = 1.0 if coupling == "ucoupling" else 0.8
        law[2] = k + (1 - k) * (1 - p_x0_mask)
        law[mask] = (1 - k) * p_x0_mask
        if smooth:
            eps = math.sqrt(smooth * 0.3 * 0.7)
            law = (law + eps) / (1 + V * eps)
        p = _chi2_p(counts, law)
        assert p > P_FAIL, (coupling, smooth, counts, law * n)


def test_label_drop_and_text_context(fresh_seed):
    torch.manual_seed(fresh_seed)
    m = UViT("tiny", num_classes=0, context_dim=5, context_len=3)
    obj = Interpolant(m, mask_index=8, p_uncond=0.3)
    ctx = torch.randn(4000, 3, 5) + 3.0
    cond = obj._conditioning({"context": ctx}, 4000, "cpu")
    dropped = (cond["context"] == 0).all(dim=(1, 2))
    assert ((~dropped) == (cond["context"] == ctx).all(dim=(1, 2))).all()
    assert stats.binomtest(int(dropped.sum()), 4000, 0.3).pvalue > P_FAIL
    loss, _ = obj({"input_ids": torch.randint(0, 8, (2, 8, 8)), "context": ctx[:2]})
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="null_context"):
        Interpolant(torch.nn.Identity(), mask_index=3)._conditioning({"context": ctx}, 4000, "cpu")


# --- samplers ---------------------------------------------------------------------------------


def _table(L, V, mask, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(L, V, generator=g, dtype=torch.float64) * 1.5
    z[:, mask] = 5.0  # a large mask logit: it must be left out of every draw
    return z


def _token_law(z, mask):
    keep = torch.arange(z.shape[-1]) != mask
    p = torch.zeros_like(z)
    p[..., keep] = torch.softmax(z[..., keep], -1)
    return p


@pytest.mark.parametrize(("name", "s", "h"), [("linear", 0.3, 0.1), ("cosine", 0.55, 0.05)])
def test_euler_step_law(name, s, h, fresh_seed):
    """A masked token is revealed with probability h·κ'(s)/(1 − κ(s)) (h/(1 − s) for linear κ),
    its value from softmax over the non-mask classes; revealed tokens never change."""
    B, L, V, mask = 4000, 3, 5, 4
    z = _table(L, V, mask, fresh_seed)
    x = torch.full((B, L), mask)
    x[:, 2] = 1  # a revealed column
    st = InterpolantSettings(batch_size=B, shape=(L,), mask_index=mask, steps=10, kappa=name)
    out = euler_step(x, z.expand(B, L, V).float(), s, h, st, seed=fresh_seed % 2**62, offset=3)
    assert (out[:, 2] == 1).all()
    sd = torch.tensor(s, dtype=torch.float64)
    q = float(h * schedules.dkappa(sd, name) / (1 - schedules.kappa(sd, name)))
    if name == "linear":
        assert q == pytest.approx(h / (1 - s))
    p = _token_law(z, mask)
    for col in (0, 1):
        law = q * p[col]
        law[mask] = 1 - q
        pv = _chi2_p(torch.bincount(out[:, col], minlength=V), law)
        assert pv > P_FAIL, (col, pv)


def test_euler_chain_reveal_times_are_uniform_for_linear_kappa(fresh_seed):
    """Linear κ on the grid s_k = k/n: a token is revealed at step k with probability exactly
    1/n (the step probabilities h/(1 − s_k) telescope); the final tokens follow p; the last step
    leaves nothing masked."""
    B, L, V, mask, n = 1500, 4, 4, 3, 6
    z = _table(L, V, mask, fresh_seed).float()
    model = FixedLogits(z, (L,))
    res = euler(model, batch_size=B, shape=(L,), mask_index=mask, steps=n, seed=fresh_seed % 2**62)
    assert res.nfe == n and (res.x != mask).all()
    masked = torch.stack([x == mask for x, _ in model.seen] + [res.x == mask])  # [n+1, B, L]
    reveal_step = (masked[:-1] & ~masked[1:]).float().argmax(0)  # [B, L]
    counts = torch.bincount(reveal_step.flatten(), minlength=n)
    assert _chi2_p(counts, torch.full((n,), 1.0 / n)) > P_FAIL, counts
    law = _token_law(z.double(), mask)
    for col in range(L):
        assert _chi2_p(torch.bincount(res.x[:, col], minlength=V), law[col]) > P_FAIL


def test_euler_anneal_noise_remasks_revealed_tokens(fresh_seed):
    B, L, V, mask = 6000, 2, 4, 3
    z = _table(L, V, mask, fresh_seed).float()
    x = torch.zeros(B, L, dtype=torch.int64)
    x[:, 1] = mask
    st = InterpolantSettings(batch_size=B, shape=(L,), mask_index=mask, steps=10,
                             anneal_noise="linear")  # fmt: skip
    out = euler_step(x, z.expand(B, L, V), 0.2, 0.1, st, seed=fresh_seed % 2**62, offset=0)
    sigma = 1 - 0.2 - 0.1  # the seed's linear rule
    remasked = int((out[:, 0] == mask).sum())
    assert stats.binomtest(remasked, B, sigma).pvalue > P_FAIL
    assert set(out[:, 0].unique().tolist()) <= {0, mask}  # remasked or kept, never redrawn
    last = euler_step(x, z.expand(B, L, V), 0.9, 0.1, st, last=True, seed=1, offset=0)
    assert (last != mask).all() and (last[:, 0] == 0).all()  # no remasking at the last step


def test_euler_max_last_takes_the_argmax(fresh_seed):
    B, L, V, mask = 50, 3, 5, 4
    z = _table(L, V, mask, fresh_seed).float()
    res = euler(FixedLogits(z, (L,)), batch_size=B, shape=(L,), mask_index=mask, steps=1,
                max_last=True, seed=fresh_seed % 2**62)  # fmt: skip
    keep = torch.arange(V) != mask
    want = torch.arange(V)[keep][z[:, keep].argmax(-1)]
    assert (res.x == want).all()


@pytest.mark.parametrize("mode", ["linear", "cosine", "arccos", "root", "square"])
def test_reveal_counts(mode):
    for steps, n in ((8, 196), (16, 196), (32, 196), (5, 5), (1, 7), (20, 1024)):
        c = reveal_counts(steps, n, mode)
        assert len(c) == steps and sum(c) == n and min(c) >= 1, (steps, n, c)
    # the seed's rounding where it is well defined: round(w / Σw · N), zeros → 1, last fixes sum
    r = torch.linspace(1, 0, 16, dtype=torch.float64)
    w = {"linear": 1 - r, "cosine": torch.cos(r * math.pi / 2),
         "arccos": torch.arccos(r) / (math.pi / 2), "root": 1 - r.sqrt(),
         "square": 1 - r**2}[mode]  # fmt: skip
    seed = torch.round(w / w.sum() * 1024).clamp_min(1)
    seed[-1] += 1024 - seed.sum()
    assert reveal_counts(16, 1024, mode) == [int(v) for v in seed]


def test_maskgit_reveals_the_scheduled_count_of_masked_tokens(fresh_seed):
    B, side, V, mask, steps = 5, 6, 7, 6, 7
    L = side * side
    model = Recording(_uvit(fresh_seed, vocab_size=V, image_size=side, num_classes=3))
    res = maskgit(model, batch_size=B, shape=(side, side), mask_index=mask, steps=steps,
                  reveal="cosine", cfg_scale=2.0, cond={"y": torch.arange(B) % 3},
                  seed=fresh_seed % 2**62)  # fmt: skip
    counts = reveal_counts(steps, L, "cosine")
    xs = [x[:B].reshape(B, L) for x in model.seen] + [res.x.reshape(B, L)]
    assert len(model.seen) == steps
    assert all(x.shape[0] == 2 * B for x in model.seen)  # one batched forward per step
    for i in range(steps):
        before, after = xs[i], xs[i + 1]
        was_masked = before == mask
        new = was_masked & (after != mask)
        assert (new.sum(1) == counts[i]).all()  # exactly the scheduled count, per sample
        assert (after[~was_masked] == before[~was_masked]).all()  # revealed tokens kept
        assert ((after == mask) == (was_masked & ~new)).all()
    assert (res.x != mask).all()


def test_maskgit_reveals_the_most_confident(fresh_seed):
    """Without randomisation and at temperature 0, the first step reveals the positions whose
    top non-mask class is the most probable."""
    L, V, mask = 10, 6, 5
    z = _table(L, V, mask, fresh_seed).float()
    st = InterpolantSettings(batch_size=2, shape=(L,), mask_index=mask, steps=4,
                             randomize="none", temperature=0.0)  # fmt: skip
    x = torch.full((2, L), mask)
    out = maskgit_step(x, z.expand(2, L, V), 3, 0, st, PhiloxStream(fresh_seed % 2**62), masked=L)
    conf = _token_law(z.double(), mask).max(-1).values
    want = set(conf.topk(3).indices.tolist())
    for row in out:
        assert set((row != mask).nonzero().flatten().tolist()) == want


# --- guidance ---------------------------------------------------------------------------------


def test_cfg_limits_and_one_batched_forward(fresh_seed):
    m = _uvit(fresh_seed)
    x = torch.randint(0, 9, (3, 8, 8))
    y = torch.randint(0, 4, (3,))
    zc, zu = m(x, y=y), m(x, y=torch.full((3,), m.null_class))
    torch.testing.assert_close(guided_logits(m, x, {"y": y}, 0.0), zu)
    torch.testing.assert_close(guided_logits(m, x, {"y": y}, 1.0), zc)
    torch.testing.assert_close(guided_logits(m, x, {"y": y}, 2.0), 2 * zc - zu,
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    calls = []
    m.register_forward_hook(lambda mod, args, kw_out=None: calls.append(args[0].shape[0]))
    guided_logits(m, x, {"y": y}, 2.0)
    assert calls == [6]
    # at s = 0 the samples do not depend on the labels; they do at s = 2
    kw = {"batch_size": 3, "shape": (8, 8), "mask_index": 8, "steps": 4, "seed": 5}
    a = euler(m, cond={"y": y}, cfg_scale=0.0, **kw).x
    b = euler(m, cond={"y": (y + 1) % 4}, cfg_scale=0.0, **kw).x
    assert torch.equal(a, b)


def test_text_conditioned_guidance(fresh_seed):
    torch.manual_seed(fresh_seed)
    m = _uvit(fresh_seed, num_classes=0, context_dim=6, context_len=2)
    x = torch.randint(0, 9, (2, 8, 8))
    ctx = torch.randn(2, 2, 6)
    zu = m(x, context=torch.zeros(2, 2, 6))
    torch.testing.assert_close(guided_logits(m, x, {"context": ctx}, 0.0), zu)
    torch.testing.assert_close(m(x), zu)  # no context = the null context
    res = maskgit(m, batch_size=2, shape=(8, 8), mask_index=8, steps=3, cfg_scale=1.5,
                  cond={"context": ctx})  # fmt: skip
    assert (res.x != 8).all()


def test_samplers_by_name_equal_the_functions(fresh_seed):
    """``mdfast.sampling.sample`` runs the interpolant samplers by name, from a settings object
    or keywords, with the same draws as the functions."""
    m = _uvit(fresh_seed)
    y = torch.randint(0, 4, (3,))
    st = InterpolantSettings(batch_size=3, shape=(8, 8), mask_index=8, steps=4,
                             seed=fresh_seed % 2**40, cfg_scale=1.5)  # fmt: skip
    assert {"euler", "maskgit"} <= set(sampler_names())
    for name, fn in (("euler", euler), ("maskgit", maskgit)):
        want = fn(m, st, cond={"y": y}).x
        assert torch.equal(sample(m, st, sampler=name, cond={"y": y}).x, want), name
        kw = {f: getattr(st, f) for f in ("batch_size", "shape", "mask_index", "steps", "seed")}
        got = sample(m, sampler=name, cond={"y": y}, cfg_scale=1.5, **kw).x
        assert torch.equal(got, want), name


# --- bad input --------------------------------------------------------------------------------


def test_bad_input_names_the_option(fresh_seed):
    uncond = _uvit(fresh_seed, num_classes=0)
    kw = {"batch_size": 2, "shape": (8, 8), "mask_index": 8, "steps": 2}
    with pytest.raises(ValueError, match=r"cfg_scale.*null"):
        euler(uncond, cond={"y": torch.zeros(2, dtype=torch.long)}, cfg_scale=2.0, **kw)
    with pytest.raises(ValueError, match=r"cfg_scale.*none was given"):
        maskgit(_uvit(fresh_seed), cfg_scale=2.0, **kw)
    for sampler in (euler, maskgit):
        with pytest.raises(ValueError, match="argument 'steps' must be an int >= 1"):
            sampler(uncond, **{**kw, "steps": 0})
    with pytest.raises(ValueError, match="argument 'kappa'"):
        euler(uncond, kappa="cubicc", **kw)
    with pytest.raises(ValueError, match="argument 'reveal'"):
        maskgit(uncond, reveal="exp", **kw)
    with pytest.raises(ValueError, match="argument 'steps' must be <= the number of tokens"):
        maskgit(uncond, **{**kw, "steps": 65})
    with pytest.raises(TypeError, match="unknown sampler option"):
        euler(uncond, guidance=2.0, **kw)
    with pytest.raises(ValueError, match="coupling"):
        Interpolant(uncond, mask_index=8, coupling="xcoupling")
    with pytest.raises(ValueError, match="mask_ce"):
        Interpolant(uncond, mask_index=8, mask_ce=False, elbo=True)


def test_samplers_and_objective_never_read_device_values(monkeypatch):
    """On the kernel path (meta tensors standing in for CUDA ones), a guided Euler run with
    remasking, a guided MaskGIT run and a smoothed training step never wait on the device."""
    from test_no_host_sync import FailOnHostSync

    from mdfast import _extension

    monkeypatch.setattr(_extension, "has_kernel", lambda device: device.type in ("cpu", "meta"))
    m = UViT("tiny").to("meta").eval()
    y = torch.arange(3, device="meta") % 4
    kw = {"batch_size": 3, "shape": (8, 8), "mask_index": 8, "steps": 3, "cfg_scale": 2.0,
          "cond": {"y": y}, "device": "meta"}  # fmt: skip
    with FailOnHostSync(devices=("meta",)):
        assert euler(m, anneal_noise="linear", **kw).x.device.type == "meta"
        assert maskgit(m, randomize="linear", **kw).x.device.type == "meta"
        obj = Interpolant(m.train(), mask_index=8, num_classes=4, smooth=0.1, elbo=True)
        x = torch.zeros(3, 8, 8, dtype=torch.long, device="meta")
        obj({"input_ids": x, "label": y})[0].backward()
