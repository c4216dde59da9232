"""Objectives: each lowers its loss on small synthetic data; time sampling; IMDM posterior and
ε branch; interpolant schedules."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from mdfast.diffusion import (
    AR,
    IMDM,
    MDLM,
    SEDD,
    IMDMBackbone,
    Interpolant,
    dkappa,
    imdm_posterior,
    imdm_update,
    kappa,
)
from mdfast.diffusion.mdlm import discretize_t
from mdfast.experiments.data import synthetic_grid, synthetic_text
from mdfast.models import UVIT_PRESETS, DiT, UViT
from mdfast.train import TrainConfig, train

V = 16  # data vocabulary; mask id = V


def _data(n=256, length=16):
    return synthetic_text(n, length, V, seed=1, temperature=0.25)


def _eval_loss(obj, data, seed=123, batches=6):
    """Mean loss over fixed batches with a fixed RNG (same noise before and after training)."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    obj.eval()
    with torch.no_grad():
        vals = [float(obj(data[i * 32 : (i + 1) * 32])[0]) for i in range(batches)]
    obj.train()
    torch.set_rng_state(state)
    return sum(vals) / len(vals)


def _fit(obj, data, tmp_path, steps=60, lr=3e-3):
    cfg = TrainConfig(
        out_dir=str(tmp_path),
        steps=steps,
        batch_size=32,
        lr=lr,
        warmup=5,
        ckpt_every=10**9,
        progress=False,
        tensorboard=False,
        log_every=10**9,
    )
    before = _eval_loss(obj, data)
    out = train(obj, data, cfg)
    after = _eval_loss(obj, data)
    assert all(math.isfinite(v) for v in out["losses"])
    return before, after


def _dit(vocab, causal=False, tc=False):
    return DiT("tiny", vocab_size=vocab, causal=causal, time_conditioning=tc, dropout=0.0)


def test_ar_loss_goes_down(tmp_path):
    torch.manual_seed(0)
    before, after = _fit(AR(_dit(V, causal=True)), _data(), tmp_path)
    assert before > math.log(V) - 0.1  # zero-initialised head: uniform predictions
    assert after < 0.75 * before


def test_interpolant_loss_goes_down_text(tmp_path):
    torch.manual_seed(0)
    obj = Interpolant(_dit(V + 1), mask_index=V, kappa="cosine")
    before, after = _fit(obj, _data(), tmp_path)
    assert after < 0.8 * before


def test_interpolant_uvit_class_conditional_loss_goes_down(tmp_path):
    torch.manual_seed(0)
    data = synthetic_grid(256, size=8, vocab=8, classes=4, seed=2)
    obj = Interpolant(UViT(UVIT_PRESETS["tiny"]), mask_index=8, kappa="linear", num_classes=4)
    cfg = TrainConfig(
        out_dir=str(tmp_path),
        steps=60,
        batch_size=32,
        lr=3e-3,
        warmup=5,
        ckpt_every=10**9,
        progress=False,
        tensorboard=False,
        log_every=10**9,
    )

    def ev():
        torch.manual_seed(5)
        with torch.no_grad():
            return float(obj({"input_ids": data["input_ids"][:64], "label": data["label"][:64]})[0])

    before = ev()
    train(obj, data, cfg)
    assert ev() < 0.8 * before


@pytest.mark.parametrize("T", [0, 50])
def test_mdlm_loss_goes_down(tmp_path, T):
    torch.manual_seed(0)
    before, after = _fit(MDLM(_dit(V + 1), mask_index=V, T=T), _data(), tmp_path)
    assert after < 0.8 * before


def test_sedd_loss_goes_down(tmp_path):
    torch.manual_seed(0)
    before, after = _fit(SEDD(_dit(V + 1, tc=True), mask_index=V), _data(), tmp_path)
    assert after < 0.8 * before


def test_imdm_loss_goes_down_and_starts_as_mdlm(tmp_path):
    torch.manual_seed(0)
    dit = _dit(V + 1)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    obj = IMDM(dit, mask_index=V)
    mdlm = MDLM(dit, mask_index=V)
    x = _data()[:8]
    torch.manual_seed(3)
    a = obj(x)[0]
    torch.manual_seed(3)
    b = mdlm(x)[0]
    # same t / mask draws (ε is drawn after them), zero-initialised ε-MLP: identical loss
    torch.testing.assert_close(a, b)
    before, after = _fit(IMDM(_dit(V + 1), mask_index=V), _data(), tmp_path)
    assert after < 0.8 * before


@pytest.mark.parametrize("objective", ["mdlm", "imdm"])
def test_fused_head_matches_unfused(fresh_seed, objective):
    """fused=True (trunk + ops.linear_masked_ce) gives the same loss and gradients as the plain
    path (logits + subs_loss) under the same random draws."""
    torch.manual_seed(fresh_seed)
    dit = _dit(V + 1)
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.1)
    cls = MDLM if objective == "mdlm" else IMDM
    a = cls(dit, mask_index=V)
    b = cls(dit, mask_index=V, fused=True)
    if objective == "imdm":
        b.model = a.model  # share the ε-MLP
        torch.nn.init.normal_(a.model.eps_mlp.fc2.weight, std=0.1)
    x = _data()[:8]
    grads = []
    losses = []
    for obj in (a, b):
        obj.zero_grad()
        torch.manual_seed(fresh_seed + 1)
        loss, _ = obj(x)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in dit.parameters()])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for g0, g1 in zip(*grads, strict=True):
        torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-6)


def test_score_entropy_zero_at_true_score_and_nonnegative(fresh_seed):
    """For a masked position the score entropy Σ_y s(y) − r log s(x0) + r(log r − 1) is ≥ 0 and
    vanishes exactly at the true absorbing-state score s(x0) = r = 1/(e^σ − 1), s(y≠x0) = 0."""
    from mdfast.diffusion.sedd import score_entropy, sedd_log_score

    torch.manual_seed(fresh_seed)
    b, length = 3, 5
    x0 = torch.randint(0, V, (b, length))
    xt = torch.where(torch.rand(b, length) < 0.6, V, x0)
    sigma = torch.rand(b, dtype=torch.float64) + 0.1
    logits = torch.randn(b, length, V + 1, dtype=torch.float64)
    ent = score_entropy(sedd_log_score(logits, xt, sigma), sigma, xt, x0, V)
    assert (ent >= -1e-12).all() and (ent[xt != V] == 0).all()
    # logits giving log s(x0) = log r: z = log r + log(e^σ − 1) + log(V) at x0, −inf elsewhere
    r = 1 / torch.expm1(sigma)
    z = torch.full_like(logits, -1e30)
    z.scatter_(-1, x0[..., None], (r.log() + torch.expm1(sigma).log() + math.log(V))[:, None, None]
               .expand(b, length, 1))  # fmt: skip
    ent0 = score_entropy(sedd_log_score(z, xt, sigma), sigma, xt, x0, V)
    torch.testing.assert_close(ent0, torch.zeros_like(ent0), rtol=0, atol=1e-9)


def test_imdm_backbone_zero_init_equals_dit(fresh_seed):
    torch.manual_seed(fresh_seed)
    dit = _dit(V + 1)
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.1)
    bb = IMDMBackbone(dit, mask_index=V)
    x = torch.randint(0, V, (2, 12))
    x[:, ::3] = V  # some masked positions
    torch.testing.assert_close(bb(x), dit(x), rtol=0, atol=0)
    torch.nn.init.normal_(bb.eps_mlp.fc2.weight, std=0.1)
    eps = bb.draw_eps(x.shape, x.device)
    assert eps.abs().max() <= 1 and eps.shape == (2, 12, 64)
    out = bb(x, eps=eps)
    # ε only enters at masked positions
    h = bb.embeds(x, eps) - dit.embed(x)
    assert torch.count_nonzero(h[x != V]) == 0 and torch.count_nonzero(h[x == V]) > 0
    assert out.shape == (2, 12, V + 1)


def test_imdm_posterior_sums_and_mdlm_marginal():
    at = torch.tensor([0.1, 0.4, 0.7])
    as_ = torch.tensor([0.3, 0.5, 0.95])
    pu, pk, pr = imdm_posterior(at, as_)
    torch.testing.assert_close(pu + pk + pr, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(pk + pr, ((1 - as_) / (1 - at)).double())  # MDLM stay-masked
    assert (pk >= 0).all() and (pr >= 0).all()


def test_imdm_update_frequencies(fresh_seed):
    """Chi-square of (unmask, keep ε, redraw ε) counts over 40k masked positions against the
    posterior; p-value threshold 1e-7 (false failure < 1e-6)."""
    g = torch.Generator().manual_seed(fresh_seed)
    n, mask = 40_000, 5
    xt = torch.full((n,), mask)
    xt[:100] = 2  # unmasked positions must not change
    eps = torch.rand(n, 3, generator=g) * 2 - 1
    x0 = torch.randint(0, 5, (n,), generator=g)
    at, as_ = 0.3, 0.6
    xs, eps_s, reset = imdm_update(xt, eps, x0, at, as_, mask, generator=g)
    assert torch.equal(xs[:100], xt[:100]) and not reset[:100].any()
    assert torch.equal(eps_s[:100], eps[:100])
    m = xt == mask
    unmask = (xs != mask) & m
    assert torch.equal(xs[unmask], x0[unmask])
    keep = m & ~unmask & ~reset
    assert torch.equal(eps_s[keep], eps[keep])
    assert (eps_s[reset] != eps[reset]).all(dim=-1).all()
    counts = [int(unmask.sum()), int(keep.sum()), int((reset & m).sum())]
    probs = torch.stack(imdm_posterior(at, as_)).numpy()
    p = stats.chisquare(counts, probs * sum(counts)).pvalue
    assert p > 1e-7, (counts, probs)


def test_discrete_time_grid():
    t = torch.tensor([0.001, 0.0099, 0.01, 0.5, 0.999, 1.0])
    d = discretize_t(t, 100)
    assert torch.allclose(d * 100, (d * 100).round())
    assert d.min() >= 0.01 and d.max() <= 1.0


def test_kappa_schedules():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(kappa(t, "linear"), t)
    c = kappa(t, "cosine")
    assert c[0] == 0 and abs(c[-1] - 1) < 1e-12 and (c.diff() > 0).all()
    for kind in ("linear", "cosine"):
        tt = t.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(kappa(tt, kind).sum(), tt)
        torch.testing.assert_close(dkappa(t, kind), g)
    with pytest.raises(ValueError, match="cosine"):
        kappa(t, "cubicc")


def test_unpack_batch_forms():
    """One unpacker for every objective: tensors, dicts, and tuples whose items the objective
    names (``(x0, label)`` by default; the MNIST objectives read ``(x_obs, observed, label)``)."""
    from mdfast.diffusion.base import unpack

    x, m, y = torch.arange(6).view(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.tensor([4, 5])
    assert unpack(x)[0] is x and unpack(x)[1:] == (None, {})
    x0, attn, rest = unpack({"input_ids": x, "attention_mask": m, "label": y})
    assert x0 is x and attn is m and rest.keys() == {"label"}
    assert unpack((x, y))[2]["label"] is y and unpack((x,))[2] == {}
    rest = unpack((x, m, y), ("observed", "label"))[2]
    assert rest["observed"] is m and rest["label"] is y
    with pytest.raises(TypeError, match="unsupported batch type"):
        unpack(3)


def test_interpolant_rejects_unknown_kappa():
    with pytest.raises(ValueError, match=r"argument 'kappa' must be one of \['linear', 'cosine'"):
        Interpolant(torch.nn.Identity(), mask_index=3, kappa="sqrt")
    with pytest.raises(ValueError, match="argument 'kappa'"):
        dkappa(torch.zeros(1), "sqrt")
    assert Interpolant(torch.nn.Identity(), mask_index=3, kappa="cosine").kappa == "cosine"
