"""Schedules (closed forms vs autograd, conventions) and the SUBS loss against MDLM's own -1e6
formulation, through the kernel and the reference path."""

from __future__ import annotations

import math

import pytest
import torch

from mdfast import baselines, losses, reference, schedules

SCHEDULES = [
    schedules.LogLinearSchedule(),
    schedules.LinearSchedule(),
    schedules.CosineSchedule(),
    schedules.PolynomialSchedule(1.0),
    schedules.PolynomialSchedule(2.5),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_schedule_derivative_and_weight(schedule, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    t = (torch.rand(64, generator=g, dtype=torch.float64) * 0.98 + 0.01).requires_grad_()
    alpha = schedule.alpha(t)
    (dalpha,) = torch.autograd.grad(alpha.sum(), t)
    t = t.detach()
    torch.testing.assert_close(schedule.dalpha(t), dalpha, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(schedule.loss_weight(t), -dalpha / (1 - alpha.detach()))
    torch.testing.assert_close(schedule.move_chance(t), 1 - alpha.detach())
    sigma, dsigma = schedule.sigma(t)
    torch.testing.assert_close(torch.exp(-sigma), alpha.detach())
    torch.testing.assert_close(dsigma, -dalpha / alpha.detach())
    # alpha decreases from ~1 (data) to ~0 (noise)
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = schedule.alpha(grid)
    assert (a[1:] <= a[:-1]).all() and abs(a[0].item() - 1) < 1e-12 and a[-1].item() < 1e-2


def test_loglinear_is_mdlm():
    """MDLM: sigma = -log(1 - (1-eps) t), dsigma = (1-eps)/(1-(1-eps)t), weight dsigma/expm1 =
    1/t, move_chance (1-eps) t."""
    eps = 1e-3
    s = schedules.LogLinearSchedule(eps)
    t = torch.linspace(1e-3, 1, 257, dtype=torch.float64)
    sigma, dsigma = s.sigma(t)
    torch.testing.assert_close(sigma, -torch.log1p(-(1 - eps) * t))
    torch.testing.assert_close(dsigma, (1 - eps) / (1 - (1 - eps) * t))
    torch.testing.assert_close(s.loss_weight(t), dsigma / torch.expm1(sigma))
    torch.testing.assert_close(s.loss_weight(t), 1 / t)
    torch.testing.assert_close(s.move_chance(t), (1 - eps) * t)


def test_polynomial_flipped_convention():
    """MDM-Prime images: P(mask) = 1 - s^n in s (0 = noise, 1 = data); flip_time maps it."""
    s_img = torch.linspace(0, 1, 11, dtype=torch.float64)
    sched = schedules.PolynomialSchedule(3.0)
    torch.testing.assert_close(sched.move_chance(schedules.flip_time(s_img)), 1 - s_img**3)


def test_cosine_is_maskgit_ratio():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(
        schedules.CosineSchedule().move_chance(t), torch.sin(math.pi * t / 2)
    )


def test_get_schedule_and_bad_names():
    assert isinstance(schedules.get_schedule("loglinear", eps=0.01), schedules.LogLinearSchedule)
    assert schedules.get_schedule("polynomial", n=2).n == 2.0
    with pytest.raises(ValueError, match="'name'"):
        schedules.get_schedule("sqrt")
    with pytest.raises(ValueError, match="'eps'"):
        schedules.LogLinearSchedule(1.5)
    with pytest.raises(ValueError, match="'n'"):
        schedules.PolynomialSchedule(0)


@pytest.mark.parametrize("antithetic", [True, False])
def test_sample_t_range_and_strata(antithetic, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    n, eps = 512, 1e-3
    t = schedules.sample_t(n, eps=eps, antithetic=antithetic, generator=g, dtype=torch.float64)
    assert t.shape == (n,) and (t >= eps).all() and (t < 1).all()
    if antithetic:  # one draw per stratum of width (1 - eps)/n
        u = (t - eps) / (1 - eps)
        strata = torch.floor(u * n).long()
        assert torch.equal(torch.sort(strata).values, torch.arange(n))


def _mdlm_batch(g, b, l, v, dtype, scale=3.0):
    mask = v - 1
    logits = (torch.randn(b, l, v, generator=g, dtype=torch.float64) * scale).to(dtype)
    x0 = torch.randint(0, v - 1, (b, l), generator=g)
    t = schedules.sample_t(b, generator=g, dtype=torch.float64)
    move = schedules.LogLinearSchedule().move_chance(t)
    masked = torch.rand(b, l, generator=g, dtype=torch.float64) < move[:, None]
    masked[0, 0] = True  # at least one masked and one clean position
    masked[0, 1] = False
    xt = torch.where(masked, mask, x0)
    return logits, x0, xt, mask, t


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_subs_loss_matches_mdlm(path, dtype, fresh_seed):
    """Our exclusion of the mask class vs MDLM's -1e6 offset: equal to float rounding."""
    g = torch.Generator().manual_seed(fresh_seed)
    logits, x0, xt, mask, t = _mdlm_batch(g, 4, 33, 129, dtype, scale=8.0)
    got = losses.subs_loss(logits, x0, xt, mask, t)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    expected = baselines.mdlm_subs_loss(logits, x0, xt, mask, t.to(got.dtype))
    exact = baselines.mdlm_subs_loss(logits.double(), x0, xt, mask, t.double())
    assert (got[xt != mask] == 0).all()
    assert (got[xt == mask] > 0).all()
    if dtype == torch.float64:
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        return
    # float32 rounding of log-probabilities (|log p| <= ~40 here: a few 1e-6 absolute), scaled
    # by the weight 1/t (up to 1e3): the bound is per element
    w = torch.where(xt == mask, 1 / t[:, None], 0.0)
    for other in (expected.double(), exact):
        err = (got.double() - other).abs()
        bound = 1e-5 * w + 2e-6 * other.abs()
        assert (err <= bound).all(), f"max excess {(err - bound).max().item()}"


def test_subs_loss_gradient_matches_mdlm(path, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits, x0, xt, mask, t = _mdlm_batch(g, 3, 17, 65, torch.float64)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    attn = (torch.rand(3, 17, generator=g) < 0.9).long()
    losses.token_mean(losses.subs_loss(a, x0, xt, mask, t), attn).backward()
    losses.token_mean(baselines.mdlm_subs_loss(b, x0, xt, mask, t), attn).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "schedule", [schedules.CosineSchedule(), schedules.PolynomialSchedule(2.0)], ids=repr
)
def test_subs_loss_other_schedules_and_per_token_t(path, schedule, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits, x0, xt, mask, _ = _mdlm_batch(g, 2, 9, 33, torch.float64)
    t = torch.rand(2, 9, generator=g, dtype=torch.float64) * 0.9 + 0.05
    got = losses.subs_loss(logits, x0, xt, mask, t, schedule)
    w = torch.where(xt == mask, schedule.loss_weight(t), 0.0)
    nll = reference.masked_ce(logits.reshape(-1, 33), x0.reshape(-1), None, mask).reshape(2, 9)
    torch.testing.assert_close(got, w * nll)


def test_subs_loss_bad_shapes():
    logits = torch.randn(2, 5, 7)
    x0 = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(RuntimeError, match="'x0'"):
        losses.subs_loss(logits, x0[:, :4], x0, 6, torch.rand(2))
    with pytest.raises(RuntimeError, match="'t'"):
        losses.subs_loss(logits, x0, x0, 6, torch.rand(3))


def test_token_mean():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    attn = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert losses.token_mean(loss, attn).item() == pytest.approx(7 / 3)
    assert losses.token_mean(loss).item() == pytest.approx(3.5)
