"""Fused masked cross-entropy (masked_ce) and its output-projection fusion (linear_masked_ce):
kernel vs float64 reference, gradients (autograd of the reference, gradcheck), in-place backward,
unread zero-weight rows, NaN isolation, opcheck, torch.compile and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mdfast import ops, reference
from mdfast._extension import BACKENDS

needs_kernels = pytest.mark.skipif(not BACKENDS, reason="compiled kernels not built")
LOW = [torch.float32, torch.bfloat16, torch.float16]

# |kernel - float64 reference on the same rounded inputs|: fp32 accumulation over V terms
LOSS_TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5, torch.float64: 1e-12}
# gradients are stored in the logits dtype: half an ulp (relative) plus accumulation error
GRAD_TOL = {
    torch.float32: (2e-5, 1e-7),
    torch.bfloat16: (2.0**-8, 1e-7),
    torch.float16: (2.0**-10, 1e-7),
    torch.float64: (1e-11, 1e-14),
}


def _inputs(g, n, v, dtype, device, *, scale=3.0, zero_frac=0.3, exclude=-1, weighted=True):
    logits = (torch.randn(n, v, generator=g, dtype=torch.float64) * scale).to(dtype)
    target = torch.randint(0, v, (n,), generator=g)
    if exclude >= 0 and v > 1:
        target = torch.where(target == exclude, (exclude + 1) % v, target)
    weight = None
    if weighted:
        weight = torch.rand(n, generator=g) + 0.25
        weight[torch.rand(n, generator=g) < zero_frac] = 0

    def to(t):
        return t if t is None else t.to(device)

    return to(logits), to(target), to(weight)


def _expected(logits, target, weight, exclude):
    w = None if weight is None else weight.double()
    return reference.masked_ce(logits.double(), target, w, exclude)


@pytest.mark.parametrize("dtype", [*LOW, torch.float64])
@pytest.mark.parametrize(("n", "v", "exclude"), [(37, 50, -1), (29, 5003, 2047), (5, 4097, 4096)])
@pytest.mark.parametrize("weighted", [True, False])
def test_forward_matches_reference(path, device, dtype, n, v, exclude, weighted, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits, target, weight = _inputs(g, n, v, dtype, device, exclude=exclude, weighted=weighted)
    loss = ops.masked_ce(logits, target, weight, exclude)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert loss.shape == (n,) and loss.device == logits.device
    expected = _expected(logits, target, weight, exclude)
    torch.testing.assert_close(loss.double(), expected, rtol=LOSS_TOL[dtype], atol=LOSS_TOL[dtype])
    if weight is not None:
        assert (loss[weight == 0] == 0).all()


@pytest.mark.parametrize("dtype", LOW)
def test_large_magnitude_equal_rows_and_v1(path, device, dtype, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    # bf16/fp16 logits of magnitude ~30 (fp16 max is 65504: stays finite)
    logits, target, weight = _inputs(g, 16, 3000, dtype, device, scale=30.0, exclude=5)
    torch.testing.assert_close(
        ops.masked_ce(logits, target, weight, 5).double(),
        _expected(logits, target, weight, 5),
        rtol=2e-5,
        atol=2e-5,
    )
    # rows of all-equal logits: loss = log(V - 1) with one class excluded
    equal = torch.full((3, 777), 4.25, dtype=dtype, device=device)
    loss = ops.masked_ce(equal, torch.tensor([0, 5, 776], device=device), None, 100)
    torch.testing.assert_close(loss.double().cpu(), torch.full((3,), 776.0).log().double())
    # V = 1, nothing excluded: loss 0 and gradient 0
    one = torch.randn(4, 1, generator=g).to(dtype).to(device).requires_grad_()
    loss = ops.masked_ce(one, torch.zeros(4, dtype=torch.long, device=device))
    assert torch.equal(loss.cpu(), torch.zeros(4))
    loss.sum().backward()
    assert torch.equal(one.grad.float().cpu(), torch.zeros(4, 1))


@pytest.mark.parametrize("dtype", [*LOW, torch.float64])
@pytest.mark.parametrize("inplace", [False, True])
def test_gradient_matches_reference_autograd(path, device, dtype, inplace, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    n, v, exclude = 23, 4500, 3
    logits, target, weight = _inputs(g, n, v, dtype, device, exclude=exclude)
    grad_out = torch.randn(n, generator=g, dtype=torch.float64).to(device)
    x = (logits.double() * 1.0).requires_grad_()  # reference on the rounded inputs, float64
    reference.masked_ce(x, target, weight.double(), exclude).backward(grad_out)
    leaf = logits.clone().requires_grad_()
    y = leaf * 1  # non-leaf, as logits coming out of a model are
    loss = ops.masked_ce(y, target, weight, exclude, inplace_backward=inplace)
    loss.backward(grad_out.to(loss.dtype))
    got = leaf.grad
    assert got.dtype == dtype
    rtol, atol = GRAD_TOL[dtype]
    torch.testing.assert_close(got.double(), x.grad, rtol=rtol, atol=atol)
    assert (got[weight == 0] == 0).all() and (got[:, exclude] == 0).all()


@needs_kernels
@pytest.mark.parametrize("dtype", LOW)
def test_inplace_backward_equals_out_of_place(device, dtype, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits, target, weight = _inputs(g, 41, 2500, dtype, device, exclude=0)
    # zero-weight rows poisoned: the in-place backward must still write zeros there
    logits[weight == 0] = float("nan")
    grad_out = torch.randn(41, generator=g).to(device)
    _loss, lse = torch.ops.mdfast.masked_ce(logits, target, weight, 0)
    out_of_place = torch.ops.mdfast.masked_ce_backward(grad_out, logits, target, weight, lse, 0)
    buf = logits.clone()
    torch.ops.mdfast.masked_ce_backward_(grad_out, buf, target, weight, lse, 0)
    assert torch.equal(buf, out_of_place)
    assert not buf.isnan().any()
    # and through autograd: the gradient lives in the logits' own storage
    leaf = logits.clone().requires_grad_()
    y = leaf * 1
    storage = y.untyped_storage().data_ptr()
    seen = {}

    def hook(grad):
        seen["ptr"] = grad.untyped_storage().data_ptr()

    y.register_hook(hook)
    ops.masked_ce(y, target, weight, 0, inplace_backward=True).backward(grad_out)
    assert seen["ptr"] == storage
    assert torch.equal(leaf.grad, out_of_place)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_weight_rows_are_not_read(path, device, dtype, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits, target, weight = _inputs(g, 32, 3001, dtype, device, zero_frac=0.5)
    weight[0], weight[1] = 0, 1.0
    poisoned = logits.clone()
    poisoned[weight == 0] = float("nan")
    target = torch.where(weight == 0, -12345, target)  # targets of unread rows are ignored too
    x = poisoned.clone().requires_grad_()
    loss = ops.masked_ce(x, target, weight)
    assert torch.isfinite(loss).all() and (loss[weight == 0] == 0).all()
    loss.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[weight == 0] == 0).all()
    clean = ops.masked_ce(logits, torch.where(weight == 0, 0, target), weight)
    assert torch.equal(loss, clean)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_row_is_isolated(path, device, bad, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits, target, weight = _inputs(g, 8, 5000, torch.float32, device, zero_frac=0.0)
    expected = ops.masked_ce(logits, target, weight)
    logits[3, 4321] = bad
    x = logits.clone().requires_grad_()
    loss = ops.masked_ce(x, target, weight)
    assert torch.isnan(loss[3])
    others = torch.arange(8, device=device) != 3
    assert torch.equal(loss[others], expected[others])
    loss[others].sum().backward()
    assert torch.isfinite(x.grad[others]).all()


def test_empty(path, device):
    logits = torch.randn(0, 7, device=device, requires_grad=True)
    loss = ops.masked_ce(logits, torch.zeros(0, dtype=torch.long, device=device), None, 3)
    assert loss.shape == (0,) and loss.dtype == torch.float32
    loss.sum().backward()
    assert logits.grad.shape == (0, 7)


@needs_kernels
def test_gradcheck_float64(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits, target, weight = _inputs(g, 6, 9, torch.float64, device, exclude=4)
    weight[0] = 0
    x = logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: ops.masked_ce(z, target, weight, 4), (x,))
    # the in-place backward consumes its logits: a second backward through them raises
    y = x * 1
    loss = ops.masked_ce(y, target, weight, 4, inplace_backward=True).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@needs_kernels
def test_opcheck(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        logits, target, weight = _inputs(g, 9, 300, dtype, device, exclude=2)
        logits.requires_grad_()
        for inplace in (False, True):
            torch.library.opcheck(
                torch.ops.mdfast.masked_ce.default, (logits, target, weight, 2, inplace)
            )
        torch.library.opcheck(torch.ops.mdfast.masked_ce.default, (logits, target, None, -1))
        loss, lse = torch.ops.mdfast.masked_ce(logits.detach(), target, weight, 2)
        grad = torch.randn(9, generator=g).to(device).to(loss.dtype)
        args = (grad, logits.detach(), target, weight, lse, 2)
        torch.library.opcheck(torch.ops.mdfast.masked_ce_backward.default, args)
        buf = logits.detach().clone()
        torch.library.opcheck(
            torch.ops.mdfast.masked_ce_backward_.default, (grad, buf, target, weight, lse, 2)
        )


@needs_kernels
@pytest.mark.parametrize("inplace", [False, True])
def test_torch_compile_training_step(device, inplace, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    d, v, mask = 16, 257, 256
    torch.manual_seed(fresh_seed % 2**31)
    model = torch.nn.Linear(d, v).to(device)
    h = torch.randn(4, 32, d, generator=g).to(device)
    x0 = torch.randint(0, v - 1, (4, 32), generator=g).to(device)
    w = (torch.rand(4, 32, generator=g) < 0.5).float().to(device) * 2.0

    def loss_fn(h, x0, w):
        logits = model(h).reshape(-1, v)
        loss = ops.masked_ce(logits, x0.reshape(-1), w.reshape(-1), mask, inplace)
        return loss.sum() / w.numel()

    expected = loss_fn(h, x0, w)
    expected.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # the forward (model + loss) is one graph; its backward is AOT-compiled with it
    compiled = torch.compile(loss_fn, fullgraph=True, backend="inductor")
    got = compiled(h, x0, w)
    got.backward()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for p, gexp in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, gexp, rtol=1e-5, atol=1e-6)


@needs_kernels
def test_torch_compile_forward_only(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits, target, weight = _inputs(g, 12, 99, torch.bfloat16, device, exclude=1)
    fn = torch.compile(lambda z, t, w: ops.masked_ce(z, t, w, 1).sum(), fullgraph=True)
    torch.testing.assert_close(
        fn(logits, target, weight), ops.masked_ce(logits, target, weight, 1).sum()
    )


# ------------------------------------------------------------------------------- bad input


def _good(device):
    return (
        torch.randn(5, 11, device=device),
        torch.tensor([0, 1, 2, 3, 4], device=device),
        torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5], device=device),
    )


def test_zero_weight_rows_skip_target_checks(path):
    z, t, w = _good("cpu")
    t = t.clone()
    t[1] = 999  # row 1 has weight 0: not checked, not read
    loss = ops.masked_ce(z, t, w)
    assert loss[1].item() == 0
    expected = reference.masked_ce(z.double(), torch.where(w == 0, 0, t), w.double())
    torch.testing.assert_close(loss, expected.float())


@pytest.mark.skipif(not torch.cuda.is_available() or "cuda" not in BACKENDS, reason="needs a GPU")
def test_cuda_int64_indexing_large():
    """N * V > 2^31 elements (bf16, 4.3 GB), so row offsets past row 42,729 overflow int32:
    loss and gradient of sampled rows on both sides of that boundary (and the last row) equal
    the float64 reference, w * (logsumexp - z[target]) and w * (softmax - onehot), with an
    excluded class; zero-weight rows give 0 and are untouched."""
    n, v, exclude = 42_800, 50_258, 7
    boundary = (2**31 + v - 1) // v  # first row whose offset needs 64 bits
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.empty(n, v, dtype=torch.bfloat16, device="cuda").normal_(generator=g)
    target = torch.randint(0, v - 1, (n,), device="cuda", generator=g)
    target[target == exclude] = v - 1
    rows = torch.cat(
        [
            torch.tensor([0, boundary - 1, boundary, n - 1]),
            torch.randint(0, boundary, (12,)),
            torch.randint(boundary, n, (12,)),
        ]
    ).unique()
    weight = torch.zeros(n, device="cuda")
    weight[rows.cuda()] = torch.rand(rows.numel(), device="cuda") + 0.5
    loss = ops.masked_ce(logits, target, weight, exclude_index=exclude)
    lse = torch.ops.mdfast.masked_ce(logits, target, weight, exclude)[1]
    grad = torch.ops.mdfast.masked_ce_backward(
        torch.ones(n, device="cuda"), logits, target, weight, lse, exclude
    )
    z = logits[rows.cuda()].double()
    w = weight[rows.cuda()].double()
    expected = reference.masked_ce(z, target[rows.cuda()], w, exclude)
    torch.testing.assert_close(loss[rows.cuda()].double(), expected, rtol=2e-5, atol=2e-5)
    z[:, exclude] = float("-inf")
    want = w[:, None] * (z.softmax(-1) - F.one_hot(target[rows.cuda()], v).double())
    rtol, atol = GRAD_TOL[torch.bfloat16]
    torch.testing.assert_close(grad[rows.cuda()].double(), want, rtol=rtol, atol=atol)
    others = torch.ones(n, dtype=torch.bool, device="cuda")
    others[rows.cuda()] = False
    assert (loss[others] == 0).all()
    assert (grad[others.nonzero()[:, 0][-64:]] == 0).all()


# ------------------------------------------------------------------------- linear_masked_ce


def _linear_inputs(g, n, d, v, dtype, device, *, zero_frac=0.4, with_bias=True, exclude=-1):
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype).to(device)
    weight = (torch.randn(v, d, generator=g, dtype=torch.float64) / d**0.5).to(dtype).to(device)
    bias = (
        torch.randn(v, generator=g, dtype=torch.float64).to(dtype).to(device) if with_bias else None
    )
    target = torch.randint(0, v, (n,), generator=g)
    if exclude >= 0:
        target = torch.where(target == exclude, (exclude + 1) % v, target)
    row_weight = torch.rand(n, generator=g) + 0.5
    row_weight[torch.rand(n, generator=g) < zero_frac] = 0
    return hidden, weight, bias, target.to(device), row_weight.to(device)


def _linear_grads(fn, hidden, weight, bias, target, row_weight, grad_out, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight)]
    b = None if bias is None else bias.detach().clone().requires_grad_()
    loss = fn(leaves[0], leaves[1], b, target, row_weight, **kw)
    loss.backward(grad_out.to(loss.dtype))
    return loss.detach(), leaves[0].grad, leaves[1].grad, None if b is None else b.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("uniform_grad", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("compact", [None, False])
def test_linear_masked_ce_matches_unfused(
    path, device, dtype, uniform_grad, with_bias, compact, fresh_seed
):
    """compact=None: the device's default; False: every row multiplied (the GPU default), the
    zero-weight rows' hidden state replaced by 0 (the reference path has one mode)."""
    g = torch.Generator().manual_seed(fresh_seed)
    n, d, v, exclude = 53, 24, 301, 300
    inputs = _linear_inputs(g, n, d, v, dtype, device, with_bias=with_bias, exclude=exclude)
    grad_out = (
        torch.full((n,), 0.37, dtype=torch.float64)
        if uniform_grad
        else torch.randn(n, generator=g, dtype=torch.float64)
    ).to(device)
    got = _linear_grads(
        ops.linear_masked_ce,
        *inputs,
        grad_out,
        exclude_index=exclude,
        chunk_rows=7,
        compact_rows=compact,
    )
    as64 = [None if t is None or not t.is_floating_point() else t.double() for t in inputs]
    as64[3] = inputs[3]
    expected = _linear_grads(reference.linear_masked_ce, *as64, grad_out, exclude_index=exclude)
    # bf16: logits and the per-chunk gradient products are rounded to bf16 (as in the unfused
    # bf16 path); the float64 comparison allows for that
    tol = {torch.float32: 2e-5, torch.float64: 1e-10, torch.bfloat16: 3e-2}[dtype]
    assert got[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if b is None:
            assert a is None
            continue
        assert i == 0 or a.dtype == dtype  # gradients in the parameters' dtype
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol)
    assert (got[0][inputs[4] == 0] == 0).all()
    assert (got[1][inputs[4] == 0] == 0).all()


@needs_kernels
def test_linear_masked_ce_chunking_is_invisible(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    inputs = _linear_inputs(g, 40, 16, 97, torch.float64, device)
    grad_out = torch.randn(40, generator=g, dtype=torch.float64).to(device)
    results = [
        _linear_grads(ops.linear_masked_ce, *inputs, grad_out, chunk_rows=c) for c in (1, 5, 64)
    ]
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@needs_kernels
def test_linear_masked_ce_zero_weight_rows_not_multiplied(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    hidden, weight, bias, target, row_weight = _linear_inputs(g, 30, 8, 50, torch.float32, device)
    hidden[row_weight == 0] = float("nan")
    got = _linear_grads(
        ops.linear_masked_ce, hidden, weight, bias, target, row_weight, torch.ones(30).to(device)
    )
    for t in got:
        assert torch.isfinite(t).all()


@needs_kernels
def test_linear_masked_ce_gradcheck_and_opcheck(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    hidden, weight, bias, target, row_weight = _linear_inputs(g, 7, 5, 11, torch.float64, device)
    hidden.requires_grad_()
    weight.requires_grad_()
    bias.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda h, w, b: ops.linear_masked_ce(h, w, b, target, row_weight, -1, 2),
        (hidden, weight, bias),
    )
    for compute_grad in (False, True):
        for compact in (True, False):
            torch.library.opcheck(
                torch.ops.mdfast.linear_masked_ce.default,
                (hidden, weight, bias, target, row_weight, -1, 3, compute_grad, compact),
            )
    torch.library.opcheck(
        torch.ops.mdfast.linear_masked_ce.default,
        (hidden, weight, None, target, row_weight, -1, None, False),
    )


@needs_kernels
def test_linear_masked_ce_torch_compile(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    hidden, weight, bias, target, row_weight = _linear_inputs(g, 33, 12, 70, torch.float32, device)
    weight.requires_grad_()

    def loss_fn(h, w):
        return ops.linear_masked_ce(h, w, bias, target, row_weight, chunk_rows=8).mean()

    expected = loss_fn(hidden, weight)
    (gw_expected,) = torch.autograd.grad(expected, weight)
    compiled = torch.compile(loss_fn, fullgraph=True)
    got = compiled(hidden, weight)
    (gw,) = torch.autograd.grad(got, weight)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(gw, gw_expected)


@pytest.mark.parametrize("n", [0, 3])
def test_linear_masked_ce_empty_or_no_active_rows(path, device, n):
    """N = 0, or every row weight 0: loss 0 and zero gradients, nothing multiplied."""
    h = torch.randn(n, 4, device=device, requires_grad=True)
    w = torch.randn(5, 4, device=device, requires_grad=True)
    b = torch.randn(5, device=device, requires_grad=True)
    target = torch.zeros(n, dtype=torch.long, device=device)
    loss = ops.linear_masked_ce(h, w, b, target, torch.zeros(n, device=device))
    assert loss.shape == (n,) and (loss == 0).all()
    loss.sum().backward()
    assert (h.grad == 0).all() and (w.grad == 0).all() and (b.grad == 0).all()


def test_non_contiguous_logits(path, device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits, target, weight = _inputs(g, 17, 300, torch.float32, device, exclude=9)
    strided = logits.t().contiguous().t().requires_grad_()  # column-major view
    assert not strided.is_contiguous()
    loss = ops.masked_ce(strided, target, weight, 9, inplace_backward=True)
    torch.testing.assert_close(loss, ops.masked_ce(logits, target, weight, 9))
    loss.sum().backward()
    x = logits.double().requires_grad_()
    reference.masked_ce(x, target, weight.double(), 9).sum().backward()
    torch.testing.assert_close(strided.grad.double(), x.grad, rtol=2e-5, atol=1e-7)
