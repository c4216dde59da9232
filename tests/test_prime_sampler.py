"""The MDM-Prime image sampler (mdfast.sampling.prime): one call's law (predictor, then corrector)
against an exact enumeration, the knobs' validation, the seed's degenerate warp, sharding."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from helpers import chisquare_against_law

from mdfast import digits as codec
from mdfast.diffusion import Prime
from mdfast.rng import PhiloxStream
from mdfast.sampling.prime import (
    PrimeSamplerSettings,
    batch_plan,
    prime_sample,
    sampler_step,
    time_grid,
)


def _probs(z: torch.Tensor, allowed: list[int]) -> dict[int, float]:
    w = {c: math.exp(float(z[c])) for c in allowed}
    total = sum(w.values())
    return {c: v / total for c, v in w.items()}


def _digits(c: int, base: int, ell: int) -> tuple[int, ...]:
    return tuple((c // base ** (ell - 1 - j)) % base for j in range(ell))


def _smallest(y, base: int, ell: int) -> int:
    return sum((0 if v == base else v) * base ** (ell - 1 - j) for j, v in enumerate(y))


def _reveal_law(y, z, base, num_classes, ell, reveal_p, mode, force_all=False):
    """Law of the predictor's output from digits y: exact joint draw over the consistent set, or
    independent marginals with the joint draw for invalid codes and single reveals."""
    mask = base
    consistent = [
        c
        for c in range(num_classes)
        if all(v == mask or _digits(c, base, ell)[j] == v for j, v in enumerate(y))
    ]
    p = _probs(z, consistent)
    masked = [j for j, v in enumerate(y) if v == mask]
    law: dict[tuple, float] = {}

    def add(key, m):
        law[key] = law.get(key, 0.0) + m

    for bits in itertools.product([False, True], repeat=len(masked)):
        rev = [j for j, b in zip(masked, bits, strict=True) if b]
        if force_all and len(rev) != len(masked):
            continue
        pr = 1.0 if force_all else reveal_p ** len(rev) * (1 - reveal_p) ** (len(masked) - len(rev))
        joint: dict[tuple, float] = {}
        for c, pc in p.items():
            out = list(y)
            for j in rev:
                out[j] = _digits(c, base, ell)[j]
            joint[tuple(out)] = joint.get(tuple(out), 0.0) + pc
        if mode == "exact" or len(rev) <= 1:
            for k, m in joint.items():
                add(k, pr * m)
            continue
        q = {
            j: [
                sum(pc for c, pc in p.items() if _digits(c, base, ell)[j] == k) for k in range(base)
            ]
            for j in rev
        }
        invalid = 0.0
        for vals in itertools.product(range(base), repeat=len(rev)):
            m = math.prod(q[j][v] for j, v in zip(rev, vals, strict=True))
            out = list(y)
            for j, v in zip(rev, vals, strict=True):
                out[j] = v
            if _smallest(out, base, ell) >= num_classes:
                invalid += m
            else:
                add(tuple(out), pr * m)
        for k, m in joint.items():
            add(k, pr * invalid * m)
    return law


def _corrector_law(y, z, base, num_classes, ell, mode, alpha, dalpha, beta, h):
    """Law after the corrector from digits y: proposal ŷ (a fully masked token's draw), each digit
    jumps w.p. 1 - exp(-h Σu) with u(ŷ) = dα/(1-α)(1+β) (0 if y = ŷ), u(m) = β dα/α (0 if y = m),
    to m ∝ u(m); a result that allows no class < C keeps y."""
    mask = base
    proposals = _reveal_law((mask,) * ell, z, base, num_classes, ell, 1.0, mode, force_all=True)
    law: dict[tuple, float] = {}
    for yhat, p_hat in proposals.items():
        per_digit = []
        for j in range(ell):
            r_y = 0.0 if y[j] == yhat[j] else dalpha / (1 - alpha) * (1 + beta)
            r_m = 0.0 if y[j] == mask else beta * dalpha / alpha
            total = r_y + r_m
            jump = 1 - math.exp(-h * total)
            opts = {y[j]: 1 - jump}
            if total > 0:
                opts[mask] = opts.get(mask, 0.0) + jump * r_m / total
                opts[yhat[j]] = opts.get(yhat[j], 0.0) + jump * r_y / total
            per_digit.append(opts)
        for combo in itertools.product(*[list(o.items()) for o in per_digit]):
            out = tuple(v for v, _ in combo)
            m = p_hat * math.prod(pr for _, pr in combo)
            if _smallest(out, base, ell) >= num_classes:
                out = tuple(y)
            law[out] = law.get(out, 0.0) + m
    return law


CASES = [(9, 2, (3, 3)), (9, 2, (1, 3)), (12, 2, (4, 4)), (8, 3, (2, 1, 2))]


@pytest.mark.parametrize("mode", ["exact", "marginal"])
@pytest.mark.parametrize("corrector", [False, True])
@pytest.mark.parametrize(("num_classes", "ell", "start"), CASES)
def test_sampler_call_matches_exact_law(mode, corrector, num_classes, ell, start, fresh_seed):
    """One call of the sampler (predictor at T(τ), then the corrector with h = σ - τ) on 60k
    copies of one token: chi-square of the digit vectors against the enumerated law."""
    base = codec.prime_base(num_classes, ell)
    assert start[0] <= base
    n, tau, sigma, sched_n = 60_000, 0.55, 0.7, 3.0
    g = torch.Generator().manual_seed(fresh_seed)
    z = 1.5 * torch.randn(num_classes, generator=g, dtype=torch.float64)
    settings = PrimeSamplerSettings(
        nfe=4,
        carry_over=mode == "marginal",
        temperature_parameters=(-0.3, 2.0, 1.0),
        corrector_parameters=(4.0, 1.0, 0.75) if corrector else (),
        seed=fresh_seed % 2**62,
    )
    temp = settings.temperature(tau)
    zt = z / temp
    a_t, a_s = tau**sched_n, sigma**sched_n
    law = _reveal_law(start, zt, base, num_classes, ell, (a_s - a_t) / (1 - a_t), mode)
    if corrector:
        beta = 4.0 * tau * (1 - tau)
        after: dict[tuple, float] = {}
        for y, m in law.items():
            for y2, m2 in _corrector_law(
                y,
                zt,
                base,
                num_classes,
                ell,
                mode,
                a_t,
                sched_n * tau ** (sched_n - 1),
                beta,
                sigma - tau,
            ).items():
                after[y2] = after.get(y2, 0.0) + m * m2
        law = after
    assert abs(sum(law.values()) - 1) < 1e-9
    process = Prime(num_classes, ell, None, convention="polynomial", schedule_n=sched_n)
    logits = z.float()[None, None].expand(1, n, -1).contiguous()
    digits = torch.tensor(start)[None, None].expand(1, n, -1).contiguous()
    out = sampler_step(process, logits, digits, tau, sigma, settings, PhiloxStream(settings.seed))
    keys, counts = torch.unique(out[0], dim=0, return_counts=True)
    observed = {tuple(k.tolist()): int(c) for k, c in zip(keys, counts, strict=True)}
    assert set(observed) <= {k for k, v in law.items() if v > 0}
    assert chisquare_against_law(observed, law, n) > 1e-6, (observed, law)


def test_sampler_ends_fully_revealed_and_valid(fresh_seed):
    """With every knob on, every token ends revealed with a class < C (C = 12 has codes >= C)."""
    num_classes, ell = 12, 2
    process = Prime(num_classes, ell, None, convention="polynomial")
    g = torch.Generator().manual_seed(fresh_seed)
    z = torch.randn(5, 40, num_classes, generator=g)
    settings = PrimeSamplerSettings(
        nfe=6,
        carry_over=True,
        temperature_parameters=(-0.2, 2, 1),
        corrector_parameters=(16, 2, 0.75),
        timestep_parameters=(1.0, 1.7, 0.0),
        seed=fresh_seed % 2**62,
    )
    calls = []

    def denoiser(d, tau):
        calls.append(tau)
        return z

    y = prime_sample(denoiser, process, torch.full((5, 40, ell), process.mask_id), settings)
    assert len(calls) == 6 and calls == sorted(calls)
    assert (y != process.mask_id).all()
    assert (codec.decode(y, num_classes, ell) < num_classes).all()
    again = prime_sample(denoiser, process, torch.full((5, 40, ell), process.mask_id), settings)
    assert torch.equal(y, again)  # same seed, same samples


def test_time_grid_warp_and_the_seeds_constant_warp():
    plain = PrimeSamplerSettings(nfe=4)
    assert time_grid(plain) == [0.0, 0.25, 0.5, 0.75]
    warped = PrimeSamplerSettings(nfe=4, timestep_parameters=(1.0, 1.7, 0.0))
    assert time_grid(warped) == pytest.approx([1 - (1 - k / 4) ** 1.7 for k in range(4)])
    off = PrimeSamplerSettings(nfe=4, timestep_parameters=(1.0, 0.0, 0.0))
    assert time_grid(off) == time_grid(plain)
    seed_like = PrimeSamplerSettings(
        nfe=4, timestep_parameters=(1.0, 0.0, 0.0), timestep_all_at_last=True
    )
    assert time_grid(seed_like) == [0.0] * 4
    process = Prime(16, 2, None, convention="polynomial")
    seen = []

    def denoiser(d, tau):
        seen.append(int((d == process.mask_id).sum()))
        return torch.zeros(1, 3, 16)

    start = torch.full((1, 3, 2), process.mask_id)
    with pytest.warns(RuntimeWarning, match="treated as no warp"):
        prime_sample(denoiser, process, start, off)
    seen.clear()
    with pytest.warns(RuntimeWarning, match="the seed's behaviour"):
        out = prime_sample(denoiser, process, start, seed_like)
    assert seen == [6, 6, 6, 6] and (out != process.mask_id).all()  # all drawn at the last call
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prime_sample(denoiser, process, start, warped)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nfe": 0}, "'nfe'"),
        ({"temperature_parameters": (1.0, 0.0)}, "'temperature_parameters'"),
        ({"temperature_parameters": (-1.0, 1.0, 0.5)}, "'temperature_parameters'"),
        ({"corrector_parameters": (1.0,)}, "'corrector_parameters'"),
        ({"corrector_parameters": (-1.0, 2.0)}, "'corrector_parameters'"),
        ({"timestep_parameters": (2.0, 1.0, 0.0)}, "'timestep_parameters'"),
        ({"timestep_parameters": (1.0, 1.0, 0.5)}, "'timestep_parameters'"),
        ({"seed": -1}, "'seed'"),
    ],
)
def test_bad_settings_name_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PrimeSamplerSettings(**kwargs)


def test_bad_fixed_digits_and_shape_are_named():
    process = Prime(16, 2, None, convention="polynomial")
    start = torch.full((1, 3, 2), process.mask_id)
    with pytest.raises(ValueError, match="fixed_digits"):
        prime_sample(
            lambda d, t: torch.zeros(1, 3, 16),
            process,
            start,
            PrimeSamplerSettings(nfe=2),
            fixed_digits=[2],
        )
    with pytest.raises(ValueError, match="'digits'"):
        prime_sample(
            lambda d, t: torch.zeros(1, 3, 16), process, start[..., :1], PrimeSamplerSettings(nfe=2)
        )


def test_batch_plan_is_the_same_job_on_any_number_of_ranks():
    one = batch_plan(1000, 64, seed=7)
    split = sorted(
        (b for r in range(3) for b in batch_plan(1000, 64, 7, r, 3)), key=lambda b: b.index
    )
    assert split == one
    assert sum(b.size for b in one) == 1000 and one[-1].size == 1000 - 15 * 64
    assert len({b.seed for b in one}) == len(one)
    assert batch_plan(1000, 64, seed=8)[0].seed != one[0].seed
