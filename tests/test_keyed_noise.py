"""Keyed noise (mdfast.rng): a sample's draws depend on (seed, purpose, global step, global
sample index) only, never on how the batch is split; no two batches, seeds or purposes share a
stream; keyed dropout has dropout's law; every generic objective draws the same noise for a
sample whether the batch is whole or split."""

from __future__ import annotations

import importlib
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from mdfast import rng, sampling
from mdfast.diffusion import IMDM, MDLM, SEDD, Interpolant, Prime
from mdfast.models import UVIT_PRESETS, DiT, UViT
from mdfast.models.dropout import KeyedDropout, name_dropout_streams
from mdfast.rng import NoiseKey, Purpose

B = 8


def _halves(seed: int, step: int, batch: int = B) -> list[NoiseKey]:
    """A global batch split the way 2 ranks (or 2 micro-batches) split it, and an odd split."""
    idx = torch.arange(batch)
    return [
        NoiseKey(seed, step, idx[: batch // 2], batch),
        NoiseKey(seed, step, idx[batch // 2 :], batch),
    ]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_draws_do_not_depend_on_the_split(fresh_seed, dtype):
    seed, step = fresh_seed % 2**62, fresh_seed % 1000
    whole = NoiseKey.for_batch(seed, step, B)
    for purpose, shape, ids in [(Purpose.MASK, (5, 3), ()), (Purpose.DROPOUT, (7,), ("l.0",))]:
        full = whole.uniform(purpose, shape, *ids, dtype=dtype)
        assert full.shape == (B, *shape) and full.dtype == dtype
        parts = [k.uniform(purpose, shape, *ids, dtype=dtype) for k in _halves(seed, step)]
        assert torch.equal(torch.cat(parts), full)
        odd = whole.select(torch.tensor([6, 1, 3]))
        assert torch.equal(odd.uniform(purpose, shape, *ids, dtype=dtype), full[[6, 1, 3]])
    strat = whole.stratified(Purpose.TIME)
    assert torch.equal(torch.cat([k.stratified(Purpose.TIME) for k in _halves(seed, step)]), strat)
    # one value per stratum [g/B, (g+1)/B) of the global batch, sample g in stratum g
    assert torch.equal(torch.floor(strat * B).long(), torch.arange(B))
    shared = [k.shared_uniform(Purpose.TIME, (3,)) for k in (whole, *_halves(seed, step))]
    assert all(torch.equal(s, shared[0]) for s in shared)


def test_no_two_batches_seeds_or_purposes_share_noise(fresh_seed):
    """(seed, step) = (s, 1) and (s + 1, 0), the collision of seed + i, and every purpose and
    layer id give disjoint 53-bit draws (a chance repeat among ~10^4 values has p ~ 1e-8)."""
    s = fresh_seed % 2**62
    draws = []
    for seed in (s, s + 1):
        for step in (0, 1, 2):
            key = NoiseKey.for_batch(seed, step, B)
            for purpose in Purpose:
                for ids in ((), (0,), (1,), ("blocks.0.dropout1",)):
                    draws.append(key.uniform(purpose, (16,), *ids).reshape(-1))
            draws.append(key.shared_uniform(Purpose.TIME, (16,)))
    values = torch.cat(draws)
    assert torch.unique(values).numel() == values.numel()
    seeds = {rng.stream_seed(a, Purpose.WINDOW, i) for a in range(4) for i in range(4)}
    assert len(seeds) == 16  # unlike seed + i, (0, window 1) and (1, window 0) differ


def test_semi_ar_windows_have_their_own_streams(monkeypatch):
    seen = []
    real = sampling.dispatch.sample

    def spy(model, settings, **kw):
        seen.append(settings.seed)
        return real(model, settings, **kw)

    # the package's ``semi_ar`` attribute is the function; patch the module's ``sample``
    monkeypatch.setattr(importlib.import_module("mdfast.sampling.semi_ar"), "sample", spy)
    model = lambda x: torch.zeros(*x.shape, 6)  # noqa: E731
    for seed in (0, 1):
        sampling.semi_ar(model, batch_size=2, length=6, mask_index=5, steps=4, seed=seed,
                         stride_length=2, num_strides=2)  # fmt: skip
    assert len(seen) == 6 and len(set(seen)) == 6
    assert seen[:3] == [rng.stream_seed(0, Purpose.WINDOW, k) for k in range(3)]


def test_draw_and_stratified_fall_back_to_torch_and_check_the_batch(fresh_seed):
    torch.manual_seed(fresh_seed % 2**31)
    a = rng.draw(Purpose.MASK, (4, 3))
    torch.manual_seed(fresh_seed % 2**31)
    assert torch.equal(a, torch.rand(4, 3))
    g = torch.Generator().manual_seed(3)
    key = NoiseKey.for_batch(fresh_seed % 2**62, 0, 4)
    with rng.noise_key(key):
        assert rng.current_noise_key() is key
        assert torch.equal(rng.draw(Purpose.MASK, (4, 3), dtype=torch.float64),
                           key.uniform(Purpose.MASK, (3,)))  # fmt: skip
        # an explicit generator always wins
        assert torch.equal(rng.draw(Purpose.MASK, 4, generator=g),
                           torch.rand(4, generator=torch.Generator().manual_seed(3)))  # fmt: skip
        with pytest.raises(ValueError, match=r"'mask'.*5 samples.*4"):
            rng.draw(Purpose.MASK, (5, 3))
        strat = rng.stratified(Purpose.TIME, 4, dtype=torch.float64)
        assert torch.equal(strat, key.stratified(Purpose.TIME))
    assert rng.current_noise_key() is None


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"seed": -1}, "seed"),
        ({"step": 2**31}, "step"),
        ({"index": torch.tensor([0, 8])}, "index"),
        ({"batch_size": 2**32}, "batch_size"),
    ],
)
def test_noise_key_bad_input_names_argument(kwargs, name):
    args = {"seed": 1, "step": 0, "index": torch.arange(4), "batch_size": 8} | kwargs
    with pytest.raises(ValueError, match=f"'{name}'"):
        NoiseKey(**args)


# ------------------------------------------------------------------------------- dropout


def test_keyed_dropout_law_scale_gradient_and_split(fresh_seed):
    p, n = 0.3, 20_000
    drop = name_dropout_streams(torch.nn.Sequential(KeyedDropout(p), KeyedDropout(p)))
    x = torch.randn(B, n, dtype=torch.float64).abs() + 0.5  # no zeros: dropped = exactly 0
    key = NoiseKey.for_batch(fresh_seed % 2**62, 7, B)
    with rng.noise_key(key):
        xr = x.clone().requires_grad_()
        y = drop[0](xr)
        y.sum().backward()
        other = drop[1](x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * (1 / (1 - p)), rtol=0, atol=0)
    torch.testing.assert_close(xr.grad, kept.double() * (1 / (1 - p)), rtol=0, atol=0)
    # kept count ~ Binomial(B n, 1 - p): two-sided test
    k = int(kept.sum())
    assert stats.binomtest(k, kept.numel(), 1 - p).pvalue > 1e-6
    assert not torch.equal(other != 0, kept)  # another layer, another mask
    # per sample: the split batch gets the same masks
    with rng.noise_key(key.select(torch.arange(B // 2, B))):
        assert torch.equal(drop[0](x[B // 2 :]), y[B // 2 :].detach())
    drop.eval()
    with rng.noise_key(key):
        assert torch.equal(drop(x), x)


def test_keyed_dropout_without_key_is_torch_dropout(fresh_seed):
    drop = name_dropout_streams(torch.nn.Sequential(KeyedDropout(0.25)))
    x = torch.randn(4, 64)
    torch.manual_seed(fresh_seed % 2**31)
    a = drop(x)
    torch.manual_seed(fresh_seed % 2**31)
    assert torch.equal(a, F.dropout(x, 0.25, training=True))
    unnamed = KeyedDropout(0.25)
    with rng.noise_key(NoiseKey.for_batch(1, 0, 4)), pytest.raises(RuntimeError, match="stream"):
        unnamed(x)


# ------------------------------------------------------------------------------- objectives

V = 16  # vocabulary; the mask id is V


def _dit(**kw):
    return DiT("tiny", vocab_size=V + 1, dropout=0.1, **kw)


def _objectives():
    """Every generic objective, with dropout on where its backbone has some."""
    return {
        "mdlm": lambda: MDLM(_dit(), V),
        "sedd": lambda: SEDD(_dit(time_conditioning=True), V),
        "imdm": lambda: IMDM(_dit(), V),
        "interpolant": lambda: Interpolant(
            UViT(replace(UVIT_PRESETS["tiny"], vocab_size=V + 1, num_classes=3, dropout=0.1)),
            V,
            num_classes=3,
            p_uncond=0.5,
        ),
    }


def _batch(name, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed % 2**31)
    if name == "interpolant":
        size = UVIT_PRESETS["tiny"].image_size
        x = torch.randint(0, V, (B, size, size), generator=g)
        return {"input_ids": x, "label": torch.randint(0, 3, (B,), generator=g)}
    return torch.randint(0, V, (B, 12), generator=g)


def _rows(batch, sl):
    return {k: v[sl] for k, v in batch.items()} if isinstance(batch, dict) else batch[sl]


def _record(objective):
    """Forward hooks that keep every input and output of the backbone (and IMDM's ε branch)."""
    seen = []

    def hook(module, args, kwargs, out):
        seen.append((module, [a for a in args if torch.is_tensor(a)], dict(kwargs), out))

    mods = [objective.model, *[m for m in objective.modules() if type(m).__name__ == "EpsilonMLP"]]
    return seen, [m.register_forward_hook(hook, with_kwargs=True) for m in mods]


@pytest.mark.parametrize("name", ["mdlm", "sedd", "imdm", "interpolant"])
def test_objective_noise_is_the_same_whole_or_split(name, fresh_seed):
    """The backbone sees bitwise the same inputs (t / sigma, x_t, labels after the drop, IMDM's
    ε) for each sample whether the global batch runs whole or as two halves, and (dropout on)
    the same outputs up to float rounding of the batch size."""
    torch.manual_seed(fresh_seed % 2**31)
    obj = _objectives()[name]()
    obj.train()
    batch = _batch(name, fresh_seed)
    seed, step = fresh_seed % 2**62, 3
    seen, hooks = _record(obj)
    with rng.noise_key(NoiseKey.for_batch(seed, step, B)):
        obj(batch)
    whole = list(seen)
    seen.clear()
    for key, sl in zip(_halves(seed, step), (slice(0, B // 2), slice(B // 2, B)), strict=True):
        with rng.noise_key(key):
            obj(_rows(batch, sl))
    for h in hooks:
        h.remove()
    halves = list(seen)
    assert len(halves) == 2 * len(whole)
    for i, (mod, args, kwargs, out) in enumerate(whole):
        a, b = halves[i], halves[len(whole) + i]
        assert a[0] is mod and b[0] is mod
        for j, x in enumerate(args):
            assert torch.equal(torch.cat([a[1][j], b[1][j]]), x), (name, i, j)
        for k, x in kwargs.items():
            if torch.is_tensor(x):
                assert torch.equal(torch.cat([a[2][k], b[2][k]]), x), (name, k)
        torch.testing.assert_close(torch.cat([a[3], b[3]]), out, rtol=1e-5, atol=1e-5)
    # the recorded draws are not degenerate: the masks and times vary over the batch
    xt = next(args[0] for mod, args, _, _ in whole if mod is obj.model)
    assert (xt == V).any() and (xt != V).any()


def test_objective_noise_changes_with_step_and_seed(fresh_seed):
    torch.manual_seed(fresh_seed % 2**31)
    obj = MDLM(_dit(), V)
    batch = _batch("mdlm", fresh_seed)
    seen, hooks = _record(obj)
    for seed, step in ((0, 1), (1, 0), (0, 0)):
        with rng.noise_key(NoiseKey.for_batch(seed, step, B)):
            obj(batch)
    for h in hooks:
        h.remove()
    xts = [s[1][0] for s in seen]
    assert not torch.equal(xts[0], xts[1]) and not torch.equal(xts[0], xts[2])


def test_prime_noise_and_times_are_keyed(fresh_seed):
    m = Prime(50, 2, 16, convention="polynomial")
    x0 = torch.randint(0, 50, (B, 6), generator=torch.Generator().manual_seed(fresh_seed % 2**31))
    seed = fresh_seed % 2**62
    with rng.noise_key(NoiseKey.for_batch(seed, 5, B)):
        t = m.sample_times(B)
        digits = m.noise(x0, t)
    parts_t, parts_d = [], []
    for key, sl in zip(_halves(seed, 5), (slice(0, B // 2), slice(B // 2, B)), strict=True):
        with rng.noise_key(key):
            parts_t.append(m.sample_times(B // 2))
            parts_d.append(m.noise(x0[sl], parts_t[-1]))
    assert torch.equal(torch.cat(parts_t), t) and torch.equal(torch.cat(parts_d), digits)
    assert (t >= 0).all() and (t <= 1 - m.eps).all()
    # sample g's time in stratum g of the global batch (mirrored by flip_time here)
    v = 1 - t / (1 - m.eps)
    assert torch.equal(torch.floor(v * B).long(), torch.arange(B))


def test_sample_cursor_keys_each_sample_by_its_global_index(fresh_seed):
    """A sampler's keyed cursor: call k of sample g reads the Purpose.SAMPLER stream at offset
    (k << 32) | g, the same numbers whatever other samples share the call."""
    from mdfast import ops

    seed = fresh_seed % 2**40
    whole = rng.SampleCursor(seed, torch.arange(6))
    part = rng.SampleCursor(seed, torch.tensor([4, 1]))
    for k in range(3):
        a, b = whole.next(), part.next()
        assert a.step == b.step == k
        args = a.op_args(Purpose.SAMPLER)
        assert args[4] == b.op_args(Purpose.SAMPLER)[0] and args[1] == b.op_args(Purpose.SAMPLER)[1]
        assert args[5][1] == (k << 32) | 5
        u = a.uniform(Purpose.SAMPLER, 7)
        torch.testing.assert_close(u[[4, 1]], b.uniform(Purpose.SAMPLER, 7), rtol=0, atol=0)
        torch.testing.assert_close(u[2], ops.uniform((7,), *args[2], torch.float64), rtol=0, atol=0)
    assert len({s for s, _ in args}) == 1 and len({o for _, o in args}) == 6
    assert (
        rng.SampleCursor(seed + 1, [0]).next().op_args("sampler")
        != whole.at(0).op_args("sampler")[:1]
    )
    with pytest.raises(ValueError, match="'sample_index'"):
        rng.SampleCursor(seed, [3, -1])
