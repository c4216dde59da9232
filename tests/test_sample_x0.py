"""sample_x0: kernel == float64 reference token for token, exact frequencies (>= 10^6 draws) for
temperature / top-k / both top-p semantics / excluded class, the float32-Gumbel tail under-draw,
stream properties, opcheck, torch.compile, unread NaN rows and flat memory (bad input:
test_op_contract.py)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from mdfast import baselines, ops, reference
from mdfast._extension import BACKENDS

needs_kernels = pytest.mark.skipif(not BACKENDS, reason="compiled kernels not built")
P_FAIL = 1e-7  # per-assertion false-failure probability of the statistical tests

OPTIONS = [
    {},
    {"temperature": 0.6},
    {"temperature": 0.0},
    {"top_k": 7},
    {"top_p": 0.9},
    {"top_p": 0.6, "nucleus": "hf"},
    {"top_k": 40, "top_p": 0.7, "temperature": 1.3},
    {"top_p": 0.02},
    {"exclude_index": 5, "top_p": 0.8},
]


def _ref_kwargs(kw: dict) -> dict:
    base = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "exclude_index": -1, "nucleus": "remdm"}
    return base | kw


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_kernel_matches_reference(device, dtype, kw, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    N, V = 29, 1001
    logits = (torch.randn(N, V, generator=g) * 2.5).to(dtype)
    logits[3, :500] = logits[3, 0]  # a row of ties
    offset = fresh_seed % 9973
    tok, prob = ops.sample_x0(logits.to(device), seed=fresh_seed, offset=offset, **kw)
    ref_tok, ref_prob = reference.sample_x0(
        logits, None, **_ref_kwargs(kw), seed=fresh_seed, offset=offset
    )
    assert tok.dtype == torch.int64 and prob.dtype == torch.float32 and tok.shape == (N,)
    assert torch.equal(tok.cpu(), ref_tok)
    torch.testing.assert_close(prob.cpu(), ref_prob, rtol=2e-6, atol=0)
    assert ((prob > 0) & (prob <= 1)).all()
    if kw.get("exclude_index", -1) >= 0:
        assert not (tok == kw["exclude_index"]).any()


def test_rows_subset_draws_the_same_tokens(path, device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits = torch.randn(50, 300, generator=g).to(device)
    rows = torch.tensor([7, 0, 49, 7, 12], device=device)
    full_tok, full_prob = ops.sample_x0(logits, top_p=0.8, seed=fresh_seed, offset=3)
    tok, prob = ops.sample_x0(logits, rows, top_p=0.8, seed=fresh_seed, offset=3)
    assert torch.equal(tok, full_tok[rows]) and torch.equal(prob, full_prob[rows])
    empty_tok, _ = ops.sample_x0(logits, rows[:0], seed=1, offset=0)
    assert empty_tok.shape == (0,)


def _expected(z: torch.Tensor, temperature, top_p, top_k, exclude_index, nucleus) -> torch.Tensor:
    """Exact truncated distribution of one row, by an explicit sort (independent of the kernels)."""
    z = z.double()
    tau = temperature if temperature > 0 else 1.0
    allowed = [c for c in range(z.numel()) if c != exclude_index]
    p = torch.softmax(z[allowed] / tau, 0)
    order = sorted(range(len(allowed)), key=lambda i: (-float(z[allowed[i]]), allowed[i]))
    keep = order[:top_k] if 0 < top_k < len(order) else order
    if top_p < 1:
        mass = p[keep] / p[keep].sum()
        cum, kept = 0.0, []
        for i, m in zip(keep, mass.tolist(), strict=True):
            cum += m
            if nucleus == "hf":
                kept.append(i)
                if cum >= top_p:
                    break
            else:
                if cum > top_p and kept:
                    break
                kept.append(i)
        keep = kept
    out = torch.zeros(z.numel(), dtype=torch.float64)
    for i in keep:
        out[allowed[i]] = p[i]
    return out / out.sum()


FREQ_CASES = [
    (
        "temperature",
        torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0, -3.0, 1.5, 0.7]),
        {"temperature": 0.7, "exclude_index": 3},
    ),
    ("top_k", torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0, -3.0, 1.5, 0.7]), {"top_k": 3}),
    # p = [.4, .25, .15, .1, .05, .05]: at top_p = .7 ReMDM keeps 2 classes, HF keeps 3
    ("top_p_remdm", torch.log(torch.tensor([0.4, 0.25, 0.15, 0.1, 0.05, 0.05])), {"top_p": 0.7}),
    (
        "top_p_hf",
        torch.log(torch.tensor([0.4, 0.25, 0.15, 0.1, 0.05, 0.05])),
        {"top_p": 0.7, "nucleus": "hf"},
    ),
    (
        "top_k_top_p",
        torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0, -3.0, 1.5, 0.7]),
        {"top_k": 5, "top_p": 0.8, "temperature": 1.5},
    ),
]


def _chi2_pvalue(counts: torch.Tensor, expected_p: torch.Tensor, n: int) -> float:
    support = expected_p > 0
    assert int(counts[~support].sum()) == 0, f"drew classes outside the support: {counts}"
    obs = counts[support].double().numpy()
    exp = (expected_p[support] * n).numpy()
    if len(obs) == 1:
        return 1.0
    return float(stats.chisquare(obs, exp).pvalue)


@pytest.mark.parametrize(("name", "row", "kw"), FREQ_CASES, ids=[c[0] for c in FREQ_CASES])
def test_frequencies_match_exact_distribution(name, row, kw, fresh_seed):
    """10^6 independent draws (one per row: noise is keyed by row) vs the exact probabilities."""
    n = 1_000_000
    expected = _expected(row, **_ref_kwargs(kw))
    logits = row.float().expand(n, -1).contiguous()
    tok, prob = ops.sample_x0(logits, seed=fresh_seed, offset=11, **kw)
    counts = torch.bincount(tok, minlength=row.numel())
    assert _chi2_pvalue(counts, expected, n) > P_FAIL, (counts, expected * n)
    torch.testing.assert_close(prob.double(), expected[tok], rtol=1e-5, atol=0)
    if "exclude_index" in kw:
        assert counts[kw["exclude_index"]] == 0


def test_top_p_semantics_differ_where_they_should(path):
    row = torch.log(torch.tensor([[0.4, 0.25, 0.15, 0.1, 0.05, 0.05]]))
    n = 20_000
    logits = row.expand(n, -1).contiguous()
    remdm, _ = ops.sample_x0(logits, top_p=0.7, seed=5, offset=0)
    hf, _ = ops.sample_x0(logits, top_p=0.7, nucleus="hf", seed=5, offset=0)
    assert set(remdm.unique().tolist()) == {0, 1}
    assert set(hf.unique().tolist()) == {0, 1, 2}
    # top-1 always kept, even when it alone exceeds p
    one, _ = ops.sample_x0(logits[:100], top_p=0.1, seed=5, offset=0)
    assert (one == 0).all()


def test_reference_path_frequencies(path, fresh_seed):
    """The pure-PyTorch fallback samples the exact distribution too (smaller: it is slow)."""
    n = 200_000
    row = torch.log(torch.tensor([0.4, 0.25, 0.15, 0.1, 0.05, 0.05]))
    kw = {"top_p": 0.9, "temperature": 0.8}
    expected = _expected(row, **_ref_kwargs(kw))
    tok, _ = ops.sample_x0(row.expand(n, -1).contiguous(), seed=fresh_seed, offset=0, **kw)
    counts = torch.bincount(tok, minlength=6)
    assert _chi2_pvalue(counts, expected, n) > P_FAIL


def test_argmax_is_deterministic_and_breaks_ties_to_smaller_index(path, device):
    logits = torch.tensor([[0.0, 3.0, 3.0, 1.0], [5.0, 5.0, 5.0, 5.0]], device=device)
    tok, prob = ops.sample_x0(logits, temperature=0.0, seed=1, offset=0)
    assert tok.tolist() == [1, 0]
    tok2, _ = ops.sample_x0(logits, temperature=0.0, exclude_index=0, seed=9, offset=4)
    assert tok2.tolist() == [1, 1]
    torch.testing.assert_close(prob[1].cpu(), torch.tensor(0.25))


def _fp32_seed_tail_rate(gap: float, n_tail: int) -> float:
    """Exact probability that the seed's float32 race (argmax p / (1e-10 - log(U + 1e-10)),
    U on torch's 24-bit grid) picks one of ``n_tail`` tokens ``gap`` nats below the top token:
    sum over the top cells j of U (U = 1 - j 2^-24, probability 2^-24 each) of
    P(E_top > e_j p_top / p_tail), e_j the seed's float32 noise of that cell (other tail tokens
    competing changes this by < 1%)."""
    j = torch.arange(1, 200_000, dtype=torch.float64)
    u = (1.0 - j * 2.0**-24).to(torch.float32)
    e = (torch.tensor(1e-10, dtype=torch.float32) - (u + 1e-10).log()).double()
    ratio = math.exp(gap)
    per_token = float((2.0**-24 * torch.exp(-e * ratio)).sum())
    return n_tail * per_token


def test_float32_gumbel_tail_underdraw(fresh_seed):
    """One top token and 10^5 tokens 16.5 nats below it (tail mass 0.68%). mdfast and the seed's
    float64 race draw the tail at the exact rate; the seed's float32 race cannot (its noise is
    capped near 16.6): its exact rate, computed over the float32 grid, is ~37% too low, and its
    simulated count agrees with that rate. (Telling the two apart by simulation alone at 1e-6
    confidence needs ~3e9 token evaluations, beyond a unit test's budget.)"""
    n_tail, gap, rows = 100_000, 16.5, 2_000
    logits = torch.full((rows, n_tail + 1), -gap)
    logits[:, 0] = 0.0
    tail_p = n_tail * math.exp(-gap) / (1 + n_tail * math.exp(-gap))
    fp32_p = _fp32_seed_tail_rate(gap, n_tail)
    assert fp32_p < 0.7 * tail_p, (fp32_p, tail_p)

    def two_sided(k, p):
        b = stats.binom(rows, p)
        return min(1.0, 2 * min(b.cdf(k), b.sf(k - 1)))

    tok, _ = ops.sample_x0(logits, seed=fresh_seed, offset=0)
    k_mdfast = int((tok != 0).sum())
    assert two_sided(k_mdfast, tail_p) > P_FAIL, (k_mdfast, rows * tail_p)
    g = torch.Generator().manual_seed(fresh_seed)
    k64 = k32 = 0
    rows = 1_000  # the seed-style races run in PyTorch: fewer rows
    for chunk in logits[:rows].split(250):
        probs = torch.softmax(chunk, -1)
        k64 += int((baselines.seed_sample_categorical(probs, True, g) != 0).sum())
        k32 += int((baselines.seed_sample_categorical(probs, False, g) != 0).sum())
    assert two_sided(k64, tail_p) > P_FAIL, (k64, rows * tail_p)
    assert two_sided(k32, fp32_p) > P_FAIL, (k32, rows * fp32_p)


# ------------------------------------------------------------------------------- op machinery


@needs_kernels
def test_opcheck(device, fresh_seed):
    logits = torch.randn(9, 33, device=device)
    rows = torch.tensor([1, 8, 3], device=device)
    for args in [
        (logits, None, 1.0, 1.0, 0, -1, "remdm", fresh_seed, 3),
        (logits, rows, 0.7, 0.8, 5, 2, "hf", fresh_seed, 0),
        (logits.bfloat16(), rows, 0.0, 1.0, 0, 0, "remdm", 1, 2),
    ]:
        torch.library.opcheck(torch.ops.mdfast.sample_x0.default, args)


@needs_kernels
def test_torch_compile_fullgraph(device, fresh_seed):
    def draw(logits, rows):
        tok, prob = ops.sample_x0(logits, rows, top_p=0.9, seed=fresh_seed, offset=2)
        return tok + 1, prob * 2

    logits = torch.randn(16, 100, device=device)
    rows = torch.arange(0, 16, 3, device=device)
    got = torch.compile(draw, fullgraph=True)(logits, rows)
    want = draw(logits, rows)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.skipif("cuda" not in BACKENDS or not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_cuda_draws_the_same_tokens_as_cpu(kw, fresh_seed):
    logits = torch.randn(300, 5003, dtype=torch.float32) * 3
    rows = torch.randint(0, 300, (100,))
    cpu = ops.sample_x0(logits, rows, seed=fresh_seed, offset=5, **kw)
    cuda = ops.sample_x0(logits.cuda(), rows.cuda(), seed=fresh_seed, offset=5, **kw)
    assert torch.equal(cuda[0].cpu(), cpu[0])
    torch.testing.assert_close(cuda[1].cpu(), cpu[1], rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------- bad input


def test_nan_rows_not_sampled_and_nan_in_the_excluded_class_are_never_read(path):
    logits = torch.randn(6, 10)
    clean = logits.clone()
    logits[4, 7] = float("nan")
    rows = torch.tensor([0, 5])
    tok, prob = ops.sample_x0(logits, rows, seed=1, offset=0)
    tok_clean, prob_clean = ops.sample_x0(clean, rows, seed=1, offset=0)
    assert torch.equal(tok, tok_clean) and torch.equal(prob, prob_clean)
    logits = clean.clone()
    logits[2, 3] = float("nan")
    tok, prob = ops.sample_x0(logits, exclude_index=3, seed=1, offset=0)
    tok_clean, prob_clean = ops.sample_x0(clean, exclude_index=3, seed=1, offset=0)
    assert torch.equal(tok, tok_clean) and torch.equal(prob, prob_clean)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@needs_kernels
def test_repeated_sampling_keeps_memory_flat():
    logits = torch.randn(64, 4096)
    x = torch.full((8, 512), 4095)
    big = torch.randn(8, 512, 4096)
    for i in range(20):  # warm up allocator caches
        ops.sample_x0(logits, top_p=0.9, seed=1, offset=i)
        ops.mask_step(x, big, mask_index=4095, alpha_t=0.5, alpha_s=0.502, seed=1, offset=i)
    before = _rss_kib()
    for i in range(200):
        ops.sample_x0(logits, top_p=0.9, top_k=100, seed=1, offset=i)
        ops.mask_step(x, big, mask_index=4095, alpha_t=0.5, alpha_s=0.502, seed=1, offset=i)
    assert _rss_kib() - before < 8 * 1024, "memory grew over repeated sampling"


def test_top_p_matches_remdm_seed_nucleus(path, fresh_seed):
    """ReMDM's own nucleus (sort, keep cumsum <= p and the top-1, renormalise), as written in
    the seed: every drawn token lies in its support and carries its renormalised probability."""
    g = torch.Generator().manual_seed(fresh_seed)
    logits = torch.randn(64, 500, generator=g, dtype=torch.float64) * 2
    for top_p in (0.3, 0.9):
        seed_p = baselines.seed_nucleus(torch.softmax(logits, -1), top_p)
        tok, prob = ops.sample_x0(logits, top_p=top_p, seed=fresh_seed, offset=1)
        chosen = seed_p.gather(1, tok[:, None])[:, 0]
        assert (chosen > 0).all()
        torch.testing.assert_close(prob.double(), chosen, rtol=1e-5, atol=0)
