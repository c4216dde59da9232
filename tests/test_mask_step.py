"""mask_step: kernel == reference, the stream contract with sample_x0, rows never read, event
rates per strategy vs the formulas, carry-over, ReMDM confidence bookkeeping, opcheck,
torch.compile around a sampler step (bad input: test_op_contract.py)."""

from __future__ import annotations

import pytest
import torch

from mdfast import ops, reference
from mdfast._extension import BACKENDS
from mdfast.sampling import remask_rates

needs_kernels = pytest.mark.skipif(not BACKENDS, reason="compiled kernels not built")
Z_MAX = 5.5  # |z| bound of the rate tests: two-sided false failure ~4e-8 each


def _state(g, B, L, V, masked_frac=0.5):
    mask = V - 1
    x = torch.randint(0, V - 1, (B, L), generator=g)
    x[torch.rand(B, L, generator=g) < masked_frac] = mask
    return x, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"remask": 0.05, "top_p": 0.9},
        {"remask": "per_position", "confidence": True, "temperature": 0.5},
        {"remask": "per_row", "top_k": 5, "temperature": 0.0},
    ],
    ids=["mdlm", "cap", "conf", "rows"],
)
def test_kernel_matches_reference(device, dtype, kw, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    B, L, V = 3, 67, 211
    x, mask = _state(g, B, L, V)
    logits = (torch.randn(B, L, V, generator=g) * 2).to(dtype)
    alpha_t = torch.rand(B, generator=g, dtype=torch.float64) * 0.5
    alpha_s = alpha_t + 0.3
    remask = kw.get("remask")
    if remask == "per_position":
        remask = torch.rand(B, L, generator=g, dtype=torch.float64) * 0.2
    elif remask == "per_row":
        remask = torch.tensor([0.0, 0.1, 0.3], dtype=torch.float64)
    conf = torch.randn(B, L, generator=g) if kw.get("confidence") else None
    opts = {k: v for k, v in kw.items() if k in ("temperature", "top_p", "top_k")}
    got = ops.mask_step(
        x.to(device),
        logits.to(device),
        mask_index=mask,
        alpha_t=alpha_t.to(device),
        alpha_s=alpha_s.to(device),
        remask=remask if not torch.is_tensor(remask) else remask.to(device),
        confidence=None if conf is None else conf.to(device),
        seed=fresh_seed,
        offset=4,
        **opts,
    )
    sig = None
    if remask is not None:
        sig = torch.as_tensor(remask, dtype=torch.float64)
        sig = (sig[:, None] if sig.dim() == 1 else sig).expand(B, L)
    want = reference.mask_step(
        x,
        logits,
        alpha_t,
        alpha_s,
        sig,
        conf,
        mask,
        opts.get("temperature", 1.0),
        opts.get("top_p", 1.0),
        opts.get("top_k", 0),
        "remdm",
        fresh_seed,
        4,
    )
    assert (
        got[0].dtype == torch.int64 and got[1].dtype == torch.bool and got[2].dtype == torch.float32
    )
    assert torch.equal(got[0].cpu(), want[0])
    assert torch.equal(got[1].cpu(), want[1])
    torch.testing.assert_close(got[2].cpu(), want[2], rtol=2e-6, atol=0)
    assert int(want[1].sum()) > 0


def test_token_equals_sample_x0_of_its_row(path, fresh_seed):
    """Position i draws exactly what sample_x0(logits.view(B*L, V), rows=[i]) draws with the same
    (seed, offset): the Gumbel noise is keyed by the logits row (philox sub-stream 1)."""
    g = torch.Generator().manual_seed(fresh_seed)
    B, L, V = 2, 40, 97
    x = torch.full((B, L), V - 1)
    logits = torch.randn(B, L, V, generator=g)
    x_next, changed, conf = ops.mask_step(
        x, logits, mask_index=V - 1, alpha_t=0.2, alpha_s=0.7, top_p=0.8, seed=fresh_seed, offset=9
    )
    rows = changed.reshape(-1).nonzero()[:, 0]
    tok, prob = ops.sample_x0(
        logits.reshape(B * L, V), rows, top_p=0.8, exclude_index=V - 1, seed=fresh_seed, offset=9
    )
    assert torch.equal(x_next.reshape(-1)[rows], tok)
    assert torch.equal(conf.reshape(-1)[rows], -prob)


def test_rows_that_do_not_unmask_are_never_read(path, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    B, L, V = 4, 300, 50
    x, mask = _state(g, B, L, V)
    logits = torch.randn(B, L, V, generator=g)
    events = ops.mask_step(
        x, None, mask_index=mask, alpha_t=0.4, alpha_s=0.45, remask=0.1, seed=fresh_seed, offset=1
    )
    unmask = events[1] & (x == mask)
    poisoned = logits.clone()
    poisoned[~unmask] = float("nan")  # every row that must not be read
    x_next, changed, _ = ops.mask_step(
        x,
        poisoned,
        mask_index=mask,
        alpha_t=0.4,
        alpha_s=0.45,
        remask=0.1,
        seed=fresh_seed,
        offset=1,
    )
    # the events do not depend on the logits; logits=None leaves the mask id where a token goes
    assert torch.equal(changed, events[1])
    assert torch.equal(x_next[~unmask], events[0][~unmask])
    assert (events[0][unmask] == mask).all() and (x_next[unmask] != mask).all()


@pytest.mark.parametrize(
    ("name", "alpha_t", "alpha_s", "sigma"),
    [
        ("mdlm", 0.3, 0.32, 0.0),
        ("cap", 0.6, 0.61, None),
        ("rescale", 0.2, 0.25, None),
        ("loop", 0.9, 0.9, 0.02),
        ("dfm_like", 0.5, 0.55, 0.15),
    ],
)
def test_event_rates_match_formulas(path, name, alpha_t, alpha_s, sigma, fresh_seed):
    if name == "cap":
        sigma = remask_rates.sigma_cap(alpha_t, alpha_s, 0.008)
    elif name == "rescale":
        sigma = remask_rates.sigma_rescale(alpha_t, alpha_s, 0.015)
    B, L = (32, 8192) if path == "kernel" else (4, 4096)
    g = torch.Generator().manual_seed(fresh_seed)
    x, mask = _state(g, B, L, 1000)
    x_next, changed, _ = ops.mask_step(
        x,
        None,
        mask_index=mask,
        alpha_t=alpha_t,
        alpha_s=alpha_s,
        remask=sigma,
        seed=fresh_seed,
        offset=0,
    )
    masked = x == mask
    q = (alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t)
    for sel, p in ((masked, q), (~masked, sigma)):
        n, k = int(sel.sum()), int(changed[sel].sum())
        if p in (0.0, 1.0):
            assert k == n * p
            continue
        z = (k - n * p) / (n * p * (1 - p)) ** 0.5
        assert abs(z) < Z_MAX, (name, k, n * p)
    # decoded tokens change only by a remask event, and then to the mask
    assert torch.equal(x_next[~masked & ~changed], x[~masked & ~changed])
    assert (x_next[~masked & changed] == mask).all()
    assert (x_next[masked & ~changed] == mask).all()


def test_per_position_sigma_rates(path, fresh_seed):
    """sigma per position (ReMDM-conf): two groups of decoded positions at different rates."""
    B, L = (16, 8192) if path == "kernel" else (2, 8192)
    x = torch.zeros(B, L, dtype=torch.int64)
    sigma = torch.where(torch.arange(L) % 2 == 0, 0.02, 0.3).to(torch.float64).expand(B, L)
    _, changed, _ = ops.mask_step(
        x, None, mask_index=7, alpha_t=0.5, alpha_s=0.5, remask=sigma, seed=fresh_seed, offset=3
    )
    for parity, p in ((0, 0.02), (1, 0.3)):
        sel = changed[:, parity::2]
        n, k = sel.numel(), int(sel.sum())
        assert abs(k - n * p) / (n * p * (1 - p)) ** 0.5 < Z_MAX


def test_confidence_bookkeeping_as_remdm(path, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    B, L, V = 3, 200, 30
    x, mask = _state(g, B, L, V)
    logits = torch.randn(B, L, V, generator=g)
    conf_in = -torch.rand(B, L, generator=g)
    conf_in[x == mask] = float("-inf")
    x_next, changed, conf = ops.mask_step(
        x,
        logits,
        mask_index=mask,
        alpha_t=0.3,
        alpha_s=0.5,
        remask=0.2,
        confidence=conf_in,
        seed=fresh_seed,
        offset=0,
    )
    unmasked = changed & (x == mask)
    remasked = changed & (x != mask)
    assert (conf[remasked] == float("-inf")).all()
    assert torch.equal(conf[~changed], conf_in[~changed])
    p = torch.softmax(logits.double().masked_fill(torch.arange(V) == mask, float("-inf")), -1)
    chosen = p.gather(-1, x_next[..., None])[..., 0]
    torch.testing.assert_close(conf[unmasked].double(), -chosen[unmasked], rtol=1e-5, atol=0)
    assert unmasked.any() and remasked.any()
    # without an input, kept positions read -inf
    _, _, conf0 = ops.mask_step(
        x, logits, mask_index=mask, alpha_t=0.3, alpha_s=0.5, seed=fresh_seed, offset=0
    )
    assert (conf0[~unmasked] == float("-inf")).all()


def test_alpha_per_batch_row(path, fresh_seed):
    B, L = 3, 20000
    x = torch.full((B, L), 9)
    a_t = torch.tensor([0.0, 0.5, 0.9], dtype=torch.float64)
    a_s = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    _, changed, _ = ops.mask_step(
        x, None, mask_index=9, alpha_t=a_t, alpha_s=a_s, seed=fresh_seed, offset=0
    )
    rate = changed.double().mean(1)
    assert abs(rate[0] - 0.1) < 0.02 and rate[1] == 0 and rate[2] == 1


# ------------------------------------------------------------------------------- op machinery


@needs_kernels
def test_opcheck(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    x, mask = _state(g, 2, 13, 17)
    x = x.to(device)
    logits = torch.randn(2, 13, 17, device=device)
    a_t = torch.tensor([0.2, 0.4], dtype=torch.float64, device=device)
    a_s = torch.tensor([0.5, 0.6], dtype=torch.float64, device=device)
    sig = torch.full((2, 13), 0.1, dtype=torch.float64, device=device)
    conf = torch.randn(2, 13, device=device)
    op = torch.ops.mdfast.mask_step.default
    torch.library.opcheck(op, (x, logits, a_t, a_s, None, None, mask, 1.0, 1.0, 0, "remdm", 1, 0))
    torch.library.opcheck(op, (x, logits, a_t, a_s, sig, conf, mask, 0.5, 0.9, 3, "hf", 2, 5))
    torch.library.opcheck(op, (x, None, a_t, a_s, sig, None, mask, 1.0, 1.0, 0, "remdm", 2, 5))


@needs_kernels
def test_torch_compile_fullgraph_sampler_step(device, fresh_seed):
    """A whole sampler step (denoiser + fused step) compiles as one graph."""
    V, mask = 33, 32
    emb = torch.randn(V, 16, device=device)
    head = torch.randn(16, V, device=device)

    def step(x, offset_tensor_unused):
        logits = torch.tanh(emb[x]) @ head
        return ops.mask_step(
            x,
            logits,
            mask_index=mask,
            alpha_t=0.3,
            alpha_s=0.4,
            remask=0.01,
            top_p=0.9,
            seed=fresh_seed,
            offset=7,
        )

    x = torch.randint(0, V, (2, 50), device=device)
    x[:, ::2] = mask
    got = torch.compile(step, fullgraph=True)(x, None)
    want = step(x, None)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif("cuda" not in BACKENDS or not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_equals_cpu(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    x, mask = _state(g, 4, 1024, 5000)
    logits = torch.randn(4, 1024, 5000, generator=g)
    sig = torch.rand(4, 1024, generator=g, dtype=torch.float64) * 0.1
    conf = torch.randn(4, 1024, generator=g)
    kw = {
        "mask_index": mask,
        "alpha_t": 0.3,
        "alpha_s": 0.4,
        "top_p": 0.9,
        "seed": fresh_seed,
        "offset": 2,
    }
    cpu = ops.mask_step(x, logits, remask=sig, confidence=conf, **kw)
    cuda = ops.mask_step(x.cuda(), logits.cuda(), remask=sig.cuda(), confidence=conf.cuda(), **kw)
    assert torch.equal(cuda[0].cpu(), cpu[0]) and torch.equal(cuda[1].cpu(), cpu[1])
    torch.testing.assert_close(cuda[2].cpu(), cpu[2], rtol=1e-5, atol=0)
