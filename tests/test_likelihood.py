"""The likelihood estimators: the K-sample low-discrepancy NELBO has the single-t estimator's mean
(both equal to the exact integral, computed by quadrature for a model whose predictions depend
on how much of the sequence is visible) with a much smaller variance; the discrete-time bound
equals its exact finite sum; draws do not depend on the batch size; AR is the exact NLL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom
from torch import nn

from mdfast.diffusion import AR, MDLM, SEDD
from mdfast.metrics.likelihood import evaluate_likelihood, sequence_terms
from mdfast.models import DiT

V, L, MASK, C = 12, 10, 12, 5.0


class Memorizer(nn.Module):
    """Knows x0; its confidence in x0_i grows with the visible fraction f of the sequence:
    logits = C·f·onehot(x0), so CE_i = log(1 + (V−1)e^{−C f}) at every masked position."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.register_buffer("x0", x0)
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, xt, sigma=None):
        f = (xt != MASK).double().mean(-1, keepdim=True)
        out = torch.zeros(*xt.shape, V + 1, dtype=torch.float64) + self.w
        src = (C * f)[..., None].expand(*xt.shape, 1)
        return out.scatter(-1, self.x0.expand_as(xt)[..., None], src)


def _exact_nelbo(eps=1e-3, T=0) -> float:
    """E_u f(t(u)) for the Memorizer: f(t) = w(t) Σ_k Binom(k; L, (1−ε)t) k CE((L−k)/L)."""
    k = np.arange(L + 1)
    ce = np.log1p((V - 1) * np.exp(-C * (L - k) / L))

    def f(t, w):
        return w * (binom.pmf(k[None, :], L, (1 - eps) * t[:, None]) * k * ce).sum(1)

    if T:  # the T-step sum: weight T(α_s − α_t)/(1 − α_t) at t = i/T, s = t − 1/T
        t = np.arange(1, T + 1) / T
        a = lambda x: 1 - (1 - eps) * x  # noqa: E731
        return float(f(t, T * (a(t - 1 / T) - a(t)) / (1 - a(t))).mean())
    u = (np.arange(200_000) + 0.5) / 200_000
    t = eps + (1 - eps) * u
    return float(f(t, 1 / t).mean())


def _replicates(objective, K, T=0, n=3000, seed=11):
    x0 = objective.model.x0.expand(n, L)
    e, m = sequence_terms(objective, x0, None, torch.arange(n), K=K, T=T, seed=seed)
    assert torch.all(m == L)
    return e.numpy()


def test_antithetic_mean_equals_single_t_with_smaller_variance():
    x0 = torch.randint(0, V, (1, L), generator=torch.Generator().manual_seed(0))
    obj = MDLM(Memorizer(x0), mask_index=MASK).eval()
    exact = _exact_nelbo()
    single, anti = _replicates(obj, K=1), _replicates(obj, K=4)
    for est in (single, anti):  # each unbiased: within 4.5 standard errors of the exact value
        assert abs(est.mean() - exact) < 4.5 * est.std() / math.sqrt(len(est)), (est.mean(), exact)
    # same mean as each other, and K lattice points beat K independent times by a wide margin
    z = (single.mean() - anti.mean()) / math.sqrt(
        single.var() / len(single) + anti.var() / len(anti)
    )
    assert abs(z) < 4.5
    assert anti.var() < 0.75 * single.var() / 4, (anti.var(), single.var())


def test_discrete_time_bound_equals_the_exact_sum():
    x0 = torch.randint(0, V, (1, L), generator=torch.Generator().manual_seed(1))
    obj = MDLM(Memorizer(x0), mask_index=MASK, T=8).eval()
    exact = _exact_nelbo(T=8)
    est = _replicates(obj, K=8, T=8)  # K = T: every grid point once per sequence
    assert abs(est.mean() - exact) < 4.5 * est.std() / math.sqrt(len(est)), (est.mean(), exact)
    assert exact > _exact_nelbo()  # the T-step bound is looser than the continuous one


def _tiny(vocab=17, **kw):
    torch.manual_seed(0)
    m = DiT("tiny", vocab_size=vocab, n_blocks=1, hidden_dim=32, n_heads=2, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("kind", ["mdlm", "sedd"])
def test_result_does_not_depend_on_batch_size(kind):
    data = torch.randint(0, 16, (13, 9), generator=torch.Generator().manual_seed(2))
    if kind == "mdlm":
        obj = MDLM(_tiny(), mask_index=16, fused=True)
    else:
        obj = SEDD(_tiny(time_conditioning=True), mask_index=16, fused=True)
    obj.eval()
    a = evaluate_likelihood(obj, data, K=3, batch_size=4, seed=5)
    b = evaluate_likelihood(obj, data, K=3, batch_size=13, seed=5)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert a["stderr"] == pytest.approx(b["stderr"], rel=1e-5)
    assert a["sequences"] == 13 and a["tokens"] == 13 * 9 and a["bound"]
    assert a["ppl"] == pytest.approx(math.exp(a["loss"])) and a["K"] == 3
    c = evaluate_likelihood(obj, data, K=3, batch_size=4, seed=6)
    assert c["loss"] != a["loss"]  # the seed matters


def test_ar_is_the_exact_token_weighted_nll():
    model = _tiny(vocab=17)
    model.causal = True
    for b in model.blocks:
        b.causal = True
    obj = AR(model, exclude_index=16).eval()
    data = torch.randint(0, 16, (5, 9), generator=torch.Generator().manual_seed(3))
    attn = torch.ones_like(data)
    attn[1, 6:] = 0
    res = evaluate_likelihood(obj, {"input_ids": data, "attention_mask": attn}, batch_size=2)
    with torch.no_grad():
        logits = model(data[:, :-1]).double()
        logits[..., 16] = -math.inf
        nll = -logits.log_softmax(-1).gather(-1, data[:, 1:, None])[..., 0]
    m = attn[:, 1:].double()
    assert res["loss"] == pytest.approx(float((nll * m).sum() / m.sum()), rel=1e-5)
    assert res["tokens"] == int(m.sum()) and not res["bound"] and res["estimator"] == "nll"
