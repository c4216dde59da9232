"""MDM-Prime sub-tokens: digit codec, prime_ce (joint / elbo) against the float64 seed-style
reference, gradients, the likelihood-bound property with a perfect model, prime_sample_step
against the reference bit for bit and against its exact law, opcheck, torch.compile (bad input:
test_op_contract.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import chisquare_against_law
from scipy import special, stats

from mdfast import digits as codec
from mdfast import ops, reference
from mdfast._extension import BACKENDS

needs_kernels = pytest.mark.skipif(not BACKENDS, reason="compiled kernels not built")
needs_gpu = pytest.mark.skipif(
    "cuda" not in BACKENDS or not torch.cuda.is_available(), reason="needs a GPU"
)

# (C, ℓ): images, text-like, invalid codes (b^ℓ > C), ℓ = 1, and a prime C
SHAPES = [(256, 2), (256, 3), (37, 4), (300, 2), (10, 1), (50, 6)]


def _random_problem(n, num_classes, ell, seed, p_mask=0.5, device="cpu", dtype=torch.float64):
    """Targets, their digits with each masked w.p. p_mask, and random logits."""
    g = torch.Generator().manual_seed(seed)
    base = codec.prime_base(num_classes, ell)
    target = torch.randint(0, num_classes, (n,), generator=g)
    digits = codec.encode(target, num_classes, ell)
    masked = torch.rand(n, ell, generator=g) < p_mask
    masked[: n // 8] = True  # fully masked rows
    masked[n // 8 : n // 8 + 3] = False  # fully visible rows
    digits = torch.where(masked, base, digits)
    logits = (3 * torch.randn(n, num_classes, generator=g, dtype=torch.float64)).to(dtype)
    return logits.to(device), target.to(device), digits.to(device), base


# ------------------------------------------------------------------------------- codec


def test_prime_base_matches_the_seed_table():
    table = {(256, 2): 16, (256, 3): 7, (256, 4): 4, (256, 8): 2, (50257, 2): 225}
    table |= {(50257, 3): 37, (50257, 4): 15, (50257, 6): 7, (50257, 8): 4, (512, 2): 23}
    for (c, ell), b in table.items():
        assert codec.prime_base(c, ell) == b
        assert b**ell >= c > (b - 1) ** ell


@pytest.mark.parametrize(("num_classes", "ell"), SHAPES)
def test_encode_decode_roundtrip(num_classes, ell):
    x = torch.arange(num_classes)
    y = codec.encode(x, num_classes, ell)
    b = codec.prime_base(num_classes, ell)
    assert y.shape == (num_classes, ell) and int(y.min()) >= 0 and int(y.max()) < b
    assert torch.equal(codec.decode(y, num_classes, ell), x)
    assert torch.equal(y, reference.prime_digit_table(num_classes, b, ell))
    # most significant first: x = sum_j y_j b^(ℓ-1-j)
    assert all(
        sum(int(y[c, j]) * b ** (ell - 1 - j) for j in range(ell)) == c
        for c in range(0, num_classes, 7)
    )


def test_super_tokens_pack_and_unpack(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    img = torch.randint(0, 256, (2, 3, 5, 4), generator=g)
    s = codec.super_encode(img)
    r, gr, b = img.unbind(1)
    assert s.shape == (2, 2, 5, 4) and int(s.max()) < 4096
    assert torch.equal(s[:, 0], 16 * r + gr // 16) and torch.equal(s[:, 1], 256 * (gr % 16) + b)
    assert torch.equal(codec.super_decode(s), img)
    every = torch.arange(1 << 24)
    pix = torch.stack([every >> 16, (every >> 8) & 255, every & 255], 0).view(1, 3, 1, -1)
    tok = codec.super_encode(pix)
    assert torch.equal(tok[0, 0, 0] * 4096 + tok[0, 1, 0], every)  # a bijection onto [0, 2^24)


def test_codec_bad_input():
    with pytest.raises(ValueError, match="'x'"):
        codec.encode(torch.tensor([256]), 256, 2)
    with pytest.raises(ValueError, match="'y'"):
        codec.decode(torch.tensor([[16, 0]]), 256, 2)  # a mask id is not a digit
    with pytest.raises(ValueError, match="'y'"):
        codec.decode(torch.tensor([[6, 6, 6]]), 256, 3)  # 342 >= 256
    with pytest.raises(ValueError, match="'pixels'"):
        codec.super_encode(torch.zeros(1, 4, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="'num_digits'"):
        codec.prime_base(10, 0)


# ------------------------------------------------------------------------------- prime_ce


def _expected_lse(logits, target, digits, base, mode):
    """The auxiliary [N, ℓ+1] output: logsumexp over V, then per digit the logsumexp over
    V ∩ {digit_j = digit_j(target)} (masked digits, elbo) or again over V; 0 on skipped rows."""
    num_classes, ell = logits.shape[1], digits.shape[1]
    z = logits.double().cpu()
    digits, target = digits.cpu(), target.cpu()
    in_v = reference.prime_consistent_mask(digits, num_classes, base)
    z_v = z.masked_fill(~in_v, -math.inf)
    lse_v = torch.logsumexp(z_v, 1)
    out = lse_v[:, None].repeat(1, ell + 1)
    if mode == "elbo":
        table = reference.prime_digit_table(num_classes, base, ell)
        same = table[None] == table[target][:, None]
        lse_j = torch.logsumexp(z_v[:, :, None].masked_fill(~same, -math.inf), 1)
        out[:, 1:] = torch.where(digits == base, lse_j, lse_v[:, None])
    return torch.where((digits == base).any(1)[:, None], out, torch.zeros_like(out))


@pytest.mark.parametrize("mode", ["joint", "elbo"])
@pytest.mark.parametrize(("num_classes", "ell"), SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_prime_ce_matches_reference_float64(
    path, device, mode, num_classes, ell, weighted, fresh_seed
):
    logits, target, digits, base = _random_problem(97, num_classes, ell, fresh_seed, device=device)
    weight = None
    if weighted:
        weight = torch.rand(
            97, dtype=torch.float64, generator=torch.Generator().manual_seed(fresh_seed)
        )
        weight[5::9] = 0
        weight = weight.to(device)
    x = logits.clone().requires_grad_()
    got = ops.prime_ce(x, target, digits, base=base, mode=mode, weight=weight)
    assert got.dtype == torch.float64 and got.shape == (97,)
    xr = logits.cpu().clone().requires_grad_()
    w_cpu = None if weight is None else weight.cpu()
    expected = reference.prime_ce(xr, target.cpu(), digits.cpu(), base, mode, w_cpu)
    torch.testing.assert_close(got.detach().cpu(), expected.detach(), rtol=1e-12, atol=1e-10)
    assert (got[(digits != base).all(1)] == 0).all()  # fully visible rows are exactly 0
    upstream = torch.randn(97, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got.backward(upstream.to(device))
    expected.backward(upstream)
    torch.testing.assert_close(x.grad.cpu(), xr.grad, rtol=1e-11, atol=1e-12)
    if path == "kernel":
        _, lse = torch.ops.mdfast.prime_ce(logits, target, digits, base, mode, weight)
        expected_lse = _expected_lse(logits, target, digits, base, mode)
        if weight is not None:
            expected_lse[weight.cpu() == 0] = 0
        torch.testing.assert_close(lse.cpu(), expected_lse, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["joint", "elbo"])
def test_prime_ce_low_precision_logits(device, dtype, mode, fresh_seed):
    logits, target, digits, base = _random_problem(
        300, 256, 2, fresh_seed, device=device, dtype=dtype
    )
    x = logits.clone().requires_grad_()
    got = ops.prime_ce(x, target, digits, base=base, mode=mode)
    assert got.dtype == torch.float32
    xr = logits.double().cpu().requires_grad_()
    expected = reference.prime_ce(xr, target.cpu(), digits.cpu(), base, mode)
    torch.testing.assert_close(got.detach().double().cpu(), expected.detach(), rtol=1e-5, atol=1e-4)
    got.sum().backward()
    expected.sum().backward()
    assert x.grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(x.grad.double().cpu(), xr.grad, rtol=tol, atol=tol)


def test_prime_ce_text_sized_rows(device, fresh_seed):
    """C = 50257, ℓ = 4 (b = 15): the real text shape, a few rows."""
    for mode in ("joint", "elbo"):
        logits, target, digits, base = _random_problem(
            12, 50257, 4, fresh_seed, device=device, dtype=torch.float32
        )
        got = ops.prime_ce(logits, target, digits, base=base, mode=mode)
        expected = reference.prime_ce(logits.double().cpu(), target.cpu(), digits.cpu(), base, mode)
        torch.testing.assert_close(got.double().cpu(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", ["joint", "elbo"])
def test_prime_ce_gradcheck(path, device, mode, fresh_seed):
    logits, target, digits, base = _random_problem(9, 12, 3, fresh_seed, device=device)
    weight = torch.rand(9, dtype=torch.float64).to(device)
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda z: ops.prime_ce(z, target, digits, base=base, mode=mode, weight=weight), (x,)
    )


def test_prime_ce_nan_logits_poison_only_their_row(path, device):
    logits, target, digits, base = _random_problem(16, 256, 2, 3, device=device)
    digits[4] = base  # fully masked: every logit of the row counts
    logits[4, 17] = math.nan
    for mode in ("joint", "elbo"):
        loss = ops.prime_ce(logits, target, digits, base=base, mode=mode)
        assert torch.isnan(loss[4]) and not torch.isnan(loss[torch.arange(16) != 4]).any()


def test_prime_ce_classes_outside_v_never_count(path, device):
    """Logits outside the consistent set (and of invalid codes) do not move the loss."""
    logits, target, digits, base = _random_problem(40, 300, 2, 7, device=device)
    in_v = reference.prime_consistent_mask(digits.cpu(), 300, base).to(device)
    changed = torch.where(in_v, logits, torch.full_like(logits, 1e4))
    for mode in ("joint", "elbo"):
        a = ops.prime_ce(logits, target, digits, base=base, mode=mode)
        b = ops.prime_ce(changed, target, digits, base=base, mode=mode)
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------- the bound


def _nelbo_exact(p_data, ell, logits, mode, device):
    """∫_0^1 (1/t) E[loss(y_t)] dt for one token with digits masked independently w.p. t (the
    linear / MDLM schedule), integrated exactly: the mask patterns S with |S| = k ≥ 1 have
    ∫ (1/t) t^k (1-t)^(ℓ-k) dt = B(k, ℓ-k+1). Every (class, pattern) pair is one weighted row."""
    num_classes = p_data.numel()
    base = codec.prime_base(num_classes, ell)
    classes = torch.arange(num_classes)
    rows, weights, targets = [], [], []
    for pattern in itertools.product([False, True], repeat=ell):
        k = sum(pattern)
        if k == 0:
            continue
        beta = special.beta(k, ell - k + 1)
        d = codec.encode(classes, num_classes, ell)
        d[:, torch.tensor(pattern)] = base
        rows.append(d)
        targets.append(classes)
        weights.append(p_data.double() * beta)
    digits = torch.cat(rows).to(device)
    target = torch.cat(targets).to(device)
    weight = torch.cat(weights).to(device)
    keep = weight > 0
    z = logits.double()[None].expand(digits.shape[0], -1).contiguous().to(device)
    loss = ops.prime_ce(
        z[keep], target[keep], digits[keep], base=base, mode=mode, weight=weight[keep]
    )
    return float(loss.sum())


def _entropy(p):
    p = p[p > 0].double()
    return float(-(p * p.log()).sum())


BOUND_CASES = {
    "two digits always equal": (torch.tensor([0.5, 0, 0, 0.5]), 2),
    "skewed C=4": (torch.tensor([0.5, 0.3, 0.05, 0.15]), 2),
    "C=8, l=3": (torch.tensor([0.3, 0.05, 0.1, 0.05, 0.05, 0.1, 0.05, 0.3]), 3),
    "C=5, l=2 (invalid codes)": (torch.tensor([0.4, 0.1, 0.2, 0.25, 0.05]), 2),
}


@pytest.mark.parametrize("case", list(BOUND_CASES))
def test_elbo_of_perfect_model_is_the_entropy_and_joint_falls_below(path, device, case):
    p_data, ell = BOUND_CASES[case]
    p_data = p_data.double() / p_data.double().sum()
    perfect = torch.where(p_data > 0, p_data.double().log(), torch.tensor(-math.inf))
    h = _entropy(p_data)
    elbo = _nelbo_exact(p_data, ell, perfect, "elbo", device)
    joint = _nelbo_exact(p_data, ell, perfect, "joint", device)
    assert abs(elbo - h) < 1e-9, (elbo, h)
    assert joint < h - 0.01, (joint, h)  # the seed's quantity is not a bound on the NLL
    if case == "two digits always equal":
        assert abs(h - math.log(2)) < 1e-12 and abs(joint - math.log(2) / 2) < 1e-9


@pytest.mark.parametrize("case", list(BOUND_CASES))
def test_elbo_never_below_entropy_for_imperfect_models(path, device, case, fresh_seed):
    p_data, ell = BOUND_CASES[case]
    p_data = p_data.double() / p_data.double().sum()
    h = _entropy(p_data)
    g = torch.Generator().manual_seed(fresh_seed)
    for _ in range(5):
        model = torch.randn(p_data.numel(), generator=g, dtype=torch.float64)
        assert _nelbo_exact(p_data, ell, model, "elbo", device) >= h - 1e-12


# ------------------------------------------------------------------------------- sampling


def _step(logits, digits, base, **kw):
    args = {"alpha_t": 0.3, "alpha_s": 0.6, "temperature": 1.0, "mode": "exact", "seed": 1}
    args |= {"offset": 0} | kw
    return ops.prime_sample_step(logits, digits, base=base, **args)


@pytest.mark.parametrize("mode", ["exact", "marginal"])
@pytest.mark.parametrize(("num_classes", "ell"), SHAPES)
def test_sample_step_kernel_equals_reference_bit_for_bit(
    device, mode, num_classes, ell, fresh_seed
):
    logits, _, digits, base = _random_problem(203, num_classes, ell, fresh_seed, p_mask=0.7)
    fixed = torch.tensor([ell - 1]) if ell > 1 else None
    for alpha_t, alpha_s, tau in ((0.2, 0.7, 0.8), (0.5, 1.0, 1.3), (1.0, 1.0, 1.0)):
        kw = {"alpha_t": alpha_t, "alpha_s": alpha_s, "temperature": tau, "mode": mode}
        kw |= {"fixed_digits": fixed, "seed": fresh_seed, "offset": 3}
        got = _step(logits.to(device), digits.to(device), base, **kw)
        expected = reference.prime_sample_step(
            logits, digits, base, alpha_t, alpha_s, tau, mode, fixed, fresh_seed, 3
        )
        assert got.dtype == torch.int64 and torch.equal(got.cpu(), expected)


@pytest.mark.parametrize("mode", ["exact", "marginal"])
@pytest.mark.parametrize(("num_classes", "ell"), [*SHAPES, (12, 3), (9, 3), (50257, 2)])
def test_sample_step_outputs_consistent_and_valid(path, device, mode, num_classes, ell, fresh_seed):
    n = 4 if num_classes > 1000 else 1500  # the reference materialises [n, ℓ, b, C]
    logits, _, digits, base = _random_problem(n, num_classes, ell, fresh_seed, p_mask=0.8)
    logits, digits = logits.float().to(device), digits.to(device)
    for alpha_s in (0.6, 1.0):
        out = _step(logits, digits, base, alpha_t=0.1, alpha_s=alpha_s, mode=mode, seed=fresh_seed)
        visible = digits != base
        assert torch.equal(out[visible], digits[visible])  # visible digits never change
        assert int(out.min()) >= 0 and int(out.max()) <= base
        smallest = (
            torch.where(out == base, 0, out)
            * (base ** torch.arange(ell - 1, -1, -1, device=device))
        ).sum(1)
        assert (smallest < num_classes).all()  # a class < C stays possible
        if alpha_s == 1.0:
            assert (out != base).all()  # the last step reveals everything
            decoded = codec.decode(out.cpu(), num_classes, ell)
            assert (decoded < num_classes).all()


def test_sample_step_fixed_digits_never_change(path, device, fresh_seed):
    logits, _, digits, base = _random_problem(500, 256, 4, fresh_seed, p_mask=0.6)
    fixed = torch.tensor([0, 2])
    for mode in ("exact", "marginal"):
        out = _step(
            logits.to(device),
            digits.to(device),
            base,
            alpha_s=1.0,
            mode=mode,
            fixed_digits=fixed.to(device) if device.type == "cpu" else fixed,
        )
        assert torch.equal(out.cpu()[:, fixed], digits[:, fixed])  # masked ones stay masked too
        assert (out.cpu()[:, [1, 3]] != base).all()


def test_sample_step_l1_marginal_mode_works(path, device, fresh_seed):
    """The seed crashes with ℓ = 1 and --carry_over; here ℓ = 1 marginal is the exact step."""
    logits, _, digits, base = _random_problem(300, 257, 1, fresh_seed, p_mask=0.9)
    kw = {"alpha_t": 0.2, "alpha_s": 0.9, "seed": fresh_seed}
    a = _step(logits.to(device), digits.to(device), base, mode="marginal", **kw)
    b = _step(logits.to(device), digits.to(device), base, mode="exact", **kw)
    assert torch.equal(a, b) and (a != digits.to(device)).any()


def _exact_law(z, digits, base, num_classes, p, tau, mode):
    """P(next digits = y) for one row, by enumeration of the reveal set R and the draws."""
    ell = len(digits)
    table = reference.prime_digit_table(num_classes, base, ell)
    in_v = reference.prime_consistent_mask(torch.tensor([digits]), num_classes, base)[0]
    p_v = torch.softmax((z / tau).masked_fill(~in_v, -math.inf), 0)
    masked = [j for j in range(ell) if digits[j] == base]
    law: dict[tuple, float] = {}

    def add(y, mass):
        law[tuple(y)] = law.get(tuple(y), 0.0) + mass

    for r_bits in itertools.product([False, True], repeat=len(masked)):
        reveal = [j for j, r in zip(masked, r_bits, strict=True) if r]
        pr = p ** len(reveal) * (1 - p) ** (len(masked) - len(reveal))
        if pr == 0:
            continue
        joint = {}
        for c in range(num_classes):
            if p_v[c] > 0:
                y = list(digits)
                for j in reveal:
                    y[j] = int(table[c, j])
                joint[tuple(y)] = joint.get(tuple(y), 0.0) + float(p_v[c])
        if mode == "exact" or len(reveal) <= 1:
            for y, m in joint.items():
                add(y, pr * m)
            continue
        q = {j: [float(p_v[table[:, j] == k].sum()) for k in range(base)] for j in reveal}
        invalid = 0.0
        for values in itertools.product(range(base), repeat=len(reveal)):
            m = math.prod(q[j][v] for j, v in zip(reveal, values, strict=True))
            if m == 0:
                continue
            y = list(digits)
            for j, v in zip(reveal, values, strict=True):
                y[j] = v
            smallest = sum(
                (0 if y[j] == base else y[j]) * base ** (ell - 1 - j) for j in range(ell)
            )
            if smallest >= num_classes:
                invalid += m
            else:
                add(y, pr * m)
        for y, m in joint.items():
            add(y, pr * invalid * m)
    return law


@needs_kernels
@pytest.mark.parametrize("mode", ["exact", "marginal"])
@pytest.mark.parametrize(
    ("num_classes", "row", "alpha_s"),
    [(12, [3, 3, 3], 0.8), (12, [0, 3, 3], 1.0), (9, [3, 3, 3], 1.0), (40, [7, 7], 1.0)],
)
def test_sample_step_matches_exact_law(mode, num_classes, row, alpha_s, fresh_seed):
    """Chi-square of the next digit vectors (so every digit marginal too) against the law
    enumerated above; with p > 1e-6 a correct sampler fails once in a million runs."""
    ell, n = len(row), 200_000
    base = codec.prime_base(num_classes, ell)
    g = torch.Generator().manual_seed(fresh_seed)
    z = 1.5 * torch.randn(num_classes, generator=g, dtype=torch.float64)
    alpha_t, tau = 0.2, 0.7
    p = (alpha_s - alpha_t) / (1 - alpha_t)
    law = _exact_law(z, row, base, num_classes, p, tau, mode)
    assert abs(sum(law.values()) - 1) < 1e-9
    logits = z.float()[None].expand(n, -1).contiguous()
    digits = torch.tensor([row]).expand(n, -1).contiguous()
    out = _step(
        logits,
        digits,
        base,
        alpha_t=alpha_t,
        alpha_s=alpha_s,
        temperature=tau,
        mode=mode,
        seed=fresh_seed,
        offset=11,
    )
    keys, counts = torch.unique(out, dim=0, return_counts=True)
    observed = {tuple(k.tolist()): int(c) for k, c in zip(keys, counts, strict=True)}
    assert set(observed) <= set(law)  # nothing impossible
    assert chisquare_against_law(observed, law, n) > 1e-6, (observed, law)


def test_marginal_mode_differs_from_exact_when_digits_correlate():
    """Two digits always equal: exact keeps them equal; independent marginals do not."""
    n, base = 20_000, 2
    z = torch.tensor([0.0, -math.inf, -math.inf, 0.0]).expand(n, -1).contiguous()
    digits = torch.full((n, 2), base)
    exact = _step(z, digits, base, alpha_t=0.0, alpha_s=1.0, mode="exact")
    marginal = _step(z, digits, base, alpha_t=0.0, alpha_s=1.0, mode="marginal")
    assert (exact[:, 0] == exact[:, 1]).all()
    mismatch = (marginal[:, 0] != marginal[:, 1]).double().mean().item()
    assert abs(mismatch - 0.5) < 0.05  # binomial sd 0.0035: 14 sd


# ------------------------------------------------------------------------------- op machinery


@needs_kernels
def test_opcheck(device, fresh_seed):
    logits, target, digits, base = _random_problem(23, 40, 2, fresh_seed, device=device)
    weight = torch.rand(23, dtype=torch.float64, device=device)
    for mode in ("joint", "elbo"):
        for w in (None, weight):
            torch.library.opcheck(
                torch.ops.mdfast.prime_ce.default,
                (logits.clone().requires_grad_(), target, digits, base, mode, w),
            )
        loss, lse = torch.ops.mdfast.prime_ce(logits, target, digits, base, mode, None)
        torch.library.opcheck(
            torch.ops.mdfast.prime_ce_backward.default,
            (torch.ones_like(loss), logits, target, digits, lse, base, mode, None),
        )
    fixed = torch.tensor([1])
    for mode in ("exact", "marginal"):
        torch.library.opcheck(
            torch.ops.mdfast.prime_sample_step.default,
            (logits, digits, base, 0.2, 0.6, 0.9, mode, fixed, fresh_seed, 4),
        )


@needs_kernels
def test_torch_compile_fullgraph(device, fresh_seed):
    logits, target, digits, base = _random_problem(31, 40, 2, fresh_seed, device=device)

    def loss_and_step(z, target, digits):
        loss = ops.prime_ce(z, target, digits, base=base, mode="elbo").sum()
        nxt = ops.prime_sample_step(
            z.detach(), digits, base=base, alpha_t=0.1, alpha_s=0.5, seed=5, offset=6
        )
        return loss, nxt

    compiled = torch.compile(loss_and_step, fullgraph=True, backend="inductor")
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    got_loss, got_next = compiled(x1, target, digits)
    exp_loss, exp_next = loss_and_step(x2, target, digits)
    torch.testing.assert_close(got_loss, exp_loss)
    assert torch.equal(got_next, exp_next)
    got_loss.backward()
    exp_loss.backward()
    torch.testing.assert_close(x1.grad, x2.grad)


@needs_gpu
def test_cuda_equals_cpu(fresh_seed):
    for num_classes, ell in SHAPES:
        logits, target, digits, base = _random_problem(
            301, num_classes, ell, fresh_seed, p_mask=0.7
        )
        for mode in ("exact", "marginal"):
            kw = {
                "alpha_t": 0.3,
                "alpha_s": 0.9,
                "temperature": 0.8,
                "mode": mode,
                "seed": fresh_seed,
            }
            cpu = _step(logits, digits, base, **kw)
            cuda = _step(logits.cuda(), digits.cuda(), base, **kw)
            assert torch.equal(cuda.cpu(), cpu)
        for mode in ("joint", "elbo"):
            a = ops.prime_ce(logits, target, digits, base=base, mode=mode)
            b = ops.prime_ce(logits.cuda(), target.cuda(), digits.cuda(), base=base, mode=mode)
            torch.testing.assert_close(b.cpu(), a, rtol=1e-12, atol=1e-10)


# ------------------------------------------------------------------------------- the module


def test_module_digit_embedding_is_one_shared_table():
    from mdfast.diffusion import Prime

    m = Prime(256, 4, 96)
    assert m.base == 4 and m.embedding.weight.shape == (5, 24)
    x = torch.tensor([[0, 255, 37]])
    digits = m.encode(x)
    digits[0, 2, 1] = m.mask_id
    h = m.embed(digits)
    assert h.shape == (1, 3, 96)
    for i in range(3):
        expected = torch.cat([m.embedding.weight[int(d)] for d in digits[0, i]])
        assert torch.equal(h[0, i], expected)


@pytest.mark.parametrize("convention", ["mdlm", "polynomial"])
def test_module_forward_process_masks_digits_independently(convention, fresh_seed):
    from mdfast.diffusion import Prime
    from mdfast.diffusion.prime import digit_schedule

    m = Prime(256, 2, 32, convention=convention, schedule_n=3.0)
    g = torch.Generator().manual_seed(fresh_seed)
    n = 100_000
    x0 = torch.randint(0, 256, (4, n), generator=g)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95], dtype=torch.float64)
    digits = m.noise(x0, t, generator=g)
    visible = digits != m.mask_id
    assert torch.equal(digits[visible], m.encode(x0)[visible])
    alpha, _ = digit_schedule(t, convention, n=3.0)
    if convention == "mdlm":
        assert torch.allclose(alpha, 1 - (1 - 1e-3) * t)
    else:
        assert torch.allclose(alpha, t**3)  # t = 1 is data
    for i in range(4):
        for pattern in ((False, False), (False, True), (True, False), (True, True)):
            a = float(alpha[i])
            p = math.prod((1 - a) if masked else a for masked in pattern)
            hits = ((~visible[i]) == torch.tensor(pattern)).all(-1).sum().item()
            sd = math.sqrt(n * p * (1 - p))
            assert abs(hits - n * p) < 6 * sd + 1, (i, pattern, hits, n * p)


@pytest.mark.parametrize("convention", ["mdlm", "polynomial"])
def test_module_nll_of_perfect_model_estimates_the_entropy(path, convention, fresh_seed):
    """Two digits always equal, L = 4 i.i.d. tokens: the elbo NLL of the perfect model is the
    entropy ln 2 per token; the joint loss would report half of it."""
    from mdfast.diffusion import Prime

    m = Prime(4, 2, 8, convention=convention)
    p_data = torch.tensor([0.5, 0.0, 0.0, 0.5], dtype=torch.float64)
    perfect = torch.where(p_data > 0, p_data.log(), torch.tensor(-math.inf, dtype=torch.float64))
    g = torch.Generator().manual_seed(fresh_seed)
    x0 = 3 * torch.randint(0, 2, (64, 4), generator=g)

    def model(digits):
        return perfect.expand(*digits.shape[:-1], 4).contiguous()

    out = m.nll(model, x0, num_times=64, generator=g)
    per_token = out["nll_per_token"]
    mean, se = per_token.mean().item(), per_token.std().item() / math.sqrt(per_token.numel())
    assert abs(mean - math.log(2)) < 6 * se + 1e-3, (mean, se)
    torch.testing.assert_close(out["bpd"], per_token / math.log(2))


def test_module_loss_trains(path, fresh_seed):
    """Prime's digit embedding + a linear head on skewed tokens: both losses are finite, the
    gradient reaches the embedding, and 60 Adam steps bring the ELBO loss measured on fixed noise
    most of the way down to the data's entropy (the model learns the class frequencies given the
    visible digits)."""
    from mdfast.diffusion import Prime

    torch.manual_seed(fresh_seed % 2**31)
    m = Prime(50, 2, 16, convention="polynomial")
    head = torch.nn.Linear(16, 50)
    probs = torch.softmax(2.0 * torch.randn(50), 0)

    def batch(g):
        x0 = torch.multinomial(probs, 64 * 6, replacement=True, generator=g).view(64, 6)
        t = m.sample_times(64, generator=g)
        return x0, t, m.noise(x0, t, generator=g)

    def eval_loss():
        with torch.no_grad():
            g = torch.Generator().manual_seed(7)
            vals = []
            for _ in range(4):
                x0, t, digits = batch(g)
                vals.append(float(m.loss(head(m.embed(digits)), x0, digits, t)))
            return sum(vals) / len(vals)

    x0, t, digits = batch(torch.Generator().manual_seed(1))
    assert t.shape == (64,) and (t >= 0).all() and (t < 1).all()
    logits = head(m.embed(digits))
    for mode in ("elbo", "joint"):
        loss = m.loss(logits, x0, digits, t, mode=mode)
        assert loss.ndim == 0 and torch.isfinite(loss)
    before = eval_loss()
    opt = torch.optim.Adam([*m.parameters(), *head.parameters()], lr=3e-2)
    g = torch.Generator().manual_seed(fresh_seed % 2**31)
    for _ in range(60):
        x0, t, digits = batch(g)
        opt.zero_grad()
        m.loss(head(m.embed(digits)), x0, digits, t).backward()
        assert m.embedding.weight.grad.abs().sum() > 0
        opt.step()
    after = eval_loss()
    # the unigram entropy H of the data is about where a model of the class frequencies lands:
    # most of the gap from the initial loss to H must close (the gap varies with the seed's law)
    entropy = float(-(probs * probs.log()).sum())
    assert after < entropy + 0.3 * (before - entropy), (before, after, entropy)


@pytest.mark.parametrize(("convention", "t", "s"), [("polynomial", 0.3, 0.6), ("mdlm", 0.6, 0.3)])
def test_module_step_reveals_at_the_schedule_rate(path, convention, t, s, fresh_seed):
    """One reverse step t -> s away from the data end: each masked digit is revealed
    independently with probability (alpha_s - alpha_t)/(1 - alpha_t) of the module's
    convention (binomial test), revealed digits are those of the class the model is sure of,
    and visible digits never change."""
    from mdfast.diffusion import Prime

    m = Prime(50, 2, 16, convention=convention)
    n = 20_000
    g = torch.Generator().manual_seed(fresh_seed % 2**31)
    c = torch.randint(0, 50, (n,), generator=g)
    logits = torch.full((n, 50), -30.0).scatter_(1, c[:, None], 30.0)  # sure of class c
    digits = m.noise(c, torch.full((n,), t, dtype=torch.float64), generator=g)
    nxt = m.step(logits, digits, t, s, seed=fresh_seed % 2**40, offset=3)
    alpha_t, _ = m.schedule(torch.tensor([t], dtype=torch.float64))
    alpha_s, _ = m.schedule(torch.tensor([s], dtype=torch.float64))
    q = float((alpha_s - alpha_t) / (1 - alpha_t))
    assert 0.05 < q < 0.95
    masked = digits == m.mask_id
    visible = ~masked
    revealed = masked & (nxt != m.mask_id)
    assert torch.equal(nxt[visible], digits[visible])
    assert torch.equal(nxt[revealed], m.encode(c)[revealed])
    result = stats.binomtest(int(revealed.sum()), int(masked.sum()), q)
    assert result.pvalue > 1e-7, (int(revealed.sum()), int(masked.sum()), q)


def test_module_corrector_jump_probabilities(fresh_seed):
    """ℓ = 1, a model sure of class 3: masked digits reveal 3 w.p. 1 − exp(−h r (1+β)); visible
    3s are re-masked w.p. 1 − exp(−h β|α'|/α); visible others jump w.p. 1 − exp(−h Σu) and to the
    mask w.p. u(m)/Σu. Binomial counts within 6 sd."""
    from mdfast.diffusion import Prime

    m = Prime(8, 1, 4, convention="polynomial", schedule_n=2.0)
    n, t, h, a, b = 60_000, 0.6, 0.05, 8.0, 1.0
    logits = torch.full((3 * n, 8), -math.inf)
    logits[:, 3] = 0.0
    digits = torch.cat([torch.full((n, 1), 8), torch.full((n, 1), 3), torch.full((n, 1), 5)])
    out = m.corrector_step(logits, digits, t, h, a=a, b=b, seed=fresh_seed, offset=0)
    alpha, dalpha = t**2, 2 * t
    beta = a * t**b * (1 - t) ** b
    r_y, r_m = dalpha / (1 - alpha) * (1 + beta), beta * dalpha / alpha
    checks = [
        ((out[:n] == 3).sum(), 1 - math.exp(-h * r_y)),
        ((out[n : 2 * n] == 8).sum(), 1 - math.exp(-h * r_m)),
        ((out[2 * n :] == 8).sum(), (1 - math.exp(-h * (r_y + r_m))) * r_m / (r_y + r_m)),
        ((out[2 * n :] == 3).sum(), (1 - math.exp(-h * (r_y + r_m))) * r_y / (r_y + r_m)),
    ]
    for count, p in checks:
        assert abs(int(count) - n * p) < 6 * math.sqrt(n * p * (1 - p)) + 1, (int(count), n * p)
    assert set(out[:n].unique().tolist()) <= {3, 8}


def test_module_corrector_keeps_tokens_valid_and_fixed_digits(path, fresh_seed):
    from mdfast.diffusion import Prime

    m = Prime(300, 2, 8, convention="polynomial")  # b = 18: codes 300..323 are invalid
    logits, _, digits, _ = _random_problem(4000, 300, 2, fresh_seed, p_mask=0.5)
    for mode in ("exact", "marginal"):
        out = m.corrector_step(
            logits,
            digits,
            0.5,
            0.2,
            a=16.0,
            b=2.0,
            mode=mode,
            seed=fresh_seed,
            offset=4,
            fixed_digits=torch.tensor([1]),
        )
        assert torch.equal(out[:, 1], digits[:, 1])
        assert (out[:, 0] != digits[:, 0]).any()
        smallest = (torch.where(out == 18, 0, out) * torch.tensor([18, 1])).sum(1)
        assert (smallest < 300).all()
    assert torch.equal(
        m.corrector_step(logits, digits, 1.0, 0.2, a=16.0, b=2.0, seed=1, offset=0), digits
    )
