"""No op synchronises the host by default.

On a GPU a host synchronisation per op call (``.item()``, ``.cpu()``, ``.tolist()``,
``nonzero()``, ``int(tensor)``, a blocking copy) makes a sampler wait on the device at every
step and breaks CUDA graph capture. Without a GPU this is tested with a dispatch mode that fails
on every operator that needs a device value on the host, around:

* the Python wrappers running on meta tensors as they run on CUDA ones (the kernel path, with
  the compiled ops' fake implementations standing in for the kernels), and
* the C++ host code of ``linear_masked_ce`` (shared by CPU and CUDA) in its sync-free
  ``compact_rows=False`` mode, on CPU tensors, with the operators it calls through the
  dispatcher intercepted too.

Each also runs with the checks switched on (``validation("full")``, ``compact_rows=True``), which
must trip the detector, so the detector is shown to work. On a GPU: every op and a ``subs_loss``
training step under ``torch.cuda.set_sync_debug_mode("error")``; whole ddpm / ddpm_cache /
first_hitting / ReMDM sampling loops synchronise at most once per step (the cached samplers'
"did anything change" branch), counted with the sync debug mode's warnings; a loop of
``mask_step`` calls captured in a CUDA graph and replayed with the eager tokens; a sampling step
under ``torch.compile(mode="reduce-overhead")`` gives the eager tokens.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from op_contract_cases import good_arguments
from torch.utils._python_dispatch import TorchDispatchMode

import mdfast
from mdfast import _extension, losses, ops, sampling

aten = torch.ops.aten
needs_ops = pytest.mark.skipif(not _extension.has_ops, reason="compiled kernels not built")
needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or "cuda" not in _extension.BACKENDS, reason="needs a GPU"
)

# operators whose result the host must wait for
SYNC_OPS = {
    aten._local_scalar_dense.default,  # .item(), int(t), float(t), .tolist()
    aten.item.default,
    aten.is_nonzero.default,  # bool(t)
    aten.nonzero.default,
    aten.masked_select.default,
    aten.equal.default,
    aten.allclose.default,
    aten.unique_dim.default,
    aten._unique2.default,
    aten.repeat_interleave.Tensor,
}


class HostSyncError(AssertionError):
    pass


class FailOnHostSync(TorchDispatchMode):
    """Raises on any operator that reads the values of a tensor on ``devices`` on the host: the
    SYNC_OPS, and copies from such a tensor to the CPU. ``devices`` are those standing in for the
    GPU (meta; or the CPU itself when testing C++ host code shared with CUDA). With
    ``into_kernels`` the operators that mdfast's own C++ ops call through the dispatcher are
    intercepted too (the op is re-dispatched to its CPU kernel with this mode active)."""

    def __init__(self, devices=("meta", "cuda"), into_kernels: bool = False):
        super().__init__()
        self.devices = devices
        self.into_kernels = into_kernels

    def _watched(self, t) -> bool:
        return isinstance(t, torch.Tensor) and t.device.type in self.devices

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_OPS and any(self._watched(a) for a in args):
            raise HostSyncError(f"host sync: {func}")
        if func in (aten._to_copy.default, aten.copy_.default):
            src = args[0] if func is aten._to_copy.default else args[1]
            dst = kwargs.get("device") if func is aten._to_copy.default else args[0].device
            to_host = dst is not None and torch.device(dst).type == "cpu"
            if to_host and self._watched(src) and src.device.type != "cpu":
                raise HostSyncError(f"host sync: {func} from {src.device} to the CPU")
        if self.into_kernels and func.namespace == "mdfast":
            with self:
                keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
                return func.redispatch(keys, *args, **kwargs)
        return func(*args, **kwargs)


# ------------------------------------------------------------------------------ the wrappers


def _meta_calls():
    """(name, call) for every op and its options, on meta tensors."""
    meta = torch.device("meta")

    def run(op, **changes):
        def call():
            kw = good_arguments(op, meta) | changes
            out = getattr(ops, op)(**kw)
            return out

        return call

    def backward(op, leaf, **changes):
        def call():
            kw = good_arguments(op, meta) | changes
            kw[leaf] = kw[leaf].detach().requires_grad_()
            getattr(ops, op)(**kw).sum().backward()

        return call

    b, l = 2, 6
    return {
        "philox4x32": run("philox4x32"),
        "uniform": run("uniform"),
        "masked_ce": run("masked_ce", exclude_index=3),
        "masked_ce-backward": backward("masked_ce", "logits"),
        "masked_ce-inplace-backward": backward("masked_ce", "logits", inplace_backward=True),
        "linear_masked_ce": run("linear_masked_ce"),
        "linear_masked_ce-backward": backward("linear_masked_ce", "weight"),
        "sample_x0": run("sample_x0", top_p=0.9, top_k=3, temperature=0.7),
        "sample_x0-rows": run("sample_x0", rows=torch.tensor([2, 0], device=meta)),
        "mask_step": run("mask_step"),
        "mask_step-remdm": run(
            "mask_step",
            alpha_t=torch.full((b,), 0.2, dtype=torch.float64, device=meta),
            alpha_s=torch.tensor(0.5, dtype=torch.float64),
            remask=torch.full((b,), 0.01, device=meta),
            confidence=torch.zeros(b, l, device=meta),
        ),
        "mask_step-events-only": run("mask_step", logits=None, remask=0.02),
        "prime_ce": run("prime_ce"),
        "prime_ce-backward": backward("prime_ce", "logits"),
        "prime_sample_step": run("prime_sample_step", mode="marginal"),
        "prime_sample_step-fixed": run(
            "prime_sample_step", fixed_digits=torch.tensor([0], device=meta)
        ),
    }


# ops whose arguments have values to check: validation "full" must read them
VALUE_CHECKED = {"masked_ce", "linear_masked_ce", "sample_x0-rows", "mask_step", "prime_ce"}


@pytest.fixture
def meta_kernels(monkeypatch):
    """The kernel path on meta tensors: the fakes run where the CUDA kernels would."""
    monkeypatch.setattr(_extension, "has_kernel", lambda device: device.type in ("cpu", "meta"))


@needs_ops
@pytest.mark.parametrize("name", list(_meta_calls()))
def test_wrappers_never_read_device_values_by_default(meta_kernels, name):
    call = _meta_calls()[name]
    with FailOnHostSync():
        call()


@needs_ops
@pytest.mark.parametrize("name", sorted(VALUE_CHECKED))
def test_full_validation_reads_device_values(meta_kernels, name):
    """The detector works: with validation on, the same calls read values on the host."""
    call = _meta_calls()[name]
    with mdfast.validation("full"), FailOnHostSync(), pytest.raises(HostSyncError):
        call()


# ------------------------------------------------------------- linear_masked_ce's C++ host code


def _linear_problem(g):
    n, d, v = 37, 8, 29
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64)
    weight = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, v - 1, (n,), generator=g)
    target = target + (target >= 3).long()  # class 3 is excluded below
    row_weight = (torch.rand(n, generator=g) < 0.4).double() * torch.rand(n, generator=g)
    hidden[row_weight == 0] = float("nan")  # never used
    return hidden.requires_grad_(), weight, bias, target, row_weight


def _linear_step(args, compact, reduce):
    loss = ops.linear_masked_ce(*args, exclude_index=3, chunk_rows=5, compact_rows=compact)
    reduce(loss).backward()
    grads = [a.grad.clone() for a in args[:3]]
    for a in args[:3]:
        a.grad = None
    return [loss.detach(), *grads]


REDUCTIONS = {"sum": lambda x: x.sum(), "mean": lambda x: x.mean(), "weighted": None}


@needs_ops
@pytest.mark.parametrize("reduction", list(REDUCTIONS))
def test_linear_masked_ce_all_rows_mode_is_sync_free_and_exact(reduction, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    args = _linear_problem(g)
    scale = torch.rand(args[0].shape[0], generator=g, dtype=torch.float64)
    reduce = REDUCTIONS[reduction] or (lambda x: (x * scale).sum())
    with FailOnHostSync(devices=("cpu",), into_kernels=True):
        got = _linear_step(args, False, reduce)
    expected = _linear_step(args, True, reduce)
    for a, b in zip(got, expected, strict=True):
        assert not torch.isnan(a).any()
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with FailOnHostSync(devices=("cpu",), into_kernels=True), pytest.raises(HostSyncError):
        _linear_step(args, True, reduce)  # the compacting mode reads the rows on the host


# ------------------------------------------------------------------------------ on a GPU


def _cuda_calls():
    """Closures that only call ops: every input is made (copied to the GPU) beforehand."""
    dev = torch.device("cuda")

    def prepared(op, leaf=None, **changes):
        kw = good_arguments(op, dev) | changes

        def call():
            if leaf is None:
                getattr(ops, op)(**kw)
                return
            args = kw | {leaf: kw[leaf].detach().requires_grad_()}
            getattr(ops, op)(**args).sum().backward()

        return call

    rows, conf, fixed = (
        torch.tensor([2, 0], device=dev),
        torch.zeros(2, 6, device=dev),
        torch.tensor([0], device=dev),
    )
    return [
        prepared("philox4x32"),
        prepared("uniform"),
        prepared("masked_ce", leaf="logits", exclude_index=3),
        prepared("masked_ce", leaf="logits", inplace_backward=True),
        prepared("linear_masked_ce", leaf="weight"),
        prepared("sample_x0", rows=rows, top_p=0.9, top_k=3),
        prepared("mask_step", remask=0.01, confidence=conf),
        prepared("prime_ce", leaf="logits"),
        prepared("prime_sample_step", mode="marginal", fixed_digits=fixed),
    ]


def _raises_on_sync(fn) -> None:
    """Runs fn once to warm up (allocator, cuBLAS handles, lazy module loading), then again with
    torch's sync debug mode raising on any host synchronisation."""
    fn()
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@needs_gpu
def test_cuda_ops_do_not_synchronise():
    calls = _cuda_calls()
    for call in calls:
        _raises_on_sync(call)


@needs_gpu
def test_cuda_subs_loss_training_step_does_not_synchronise():
    dev = torch.device("cuda")
    vocab, mask, b, l, d = 50, 49, 4, 16, 32
    # one-hot by comparison and two linear maps: no operator of the model itself synchronises
    # (an embedding's CUDA backward may), so what is tested is subs_loss and its op
    ids = torch.arange(vocab, device=dev)
    net = torch.nn.Sequential(torch.nn.Linear(vocab, d), torch.nn.Linear(d, vocab)).to(dev)

    def model(x):
        return net((x[..., None] == ids).float())

    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, capturable=True)
    gen = torch.Generator(device=dev).manual_seed(0)

    def step():
        x0 = torch.randint(0, mask, (b, l), device=dev, generator=gen)
        t = torch.rand(b, device=dev, generator=gen).clamp_min(1e-3)
        xt = torch.where(torch.rand(b, l, device=dev, generator=gen) < t[:, None], mask, x0)
        loss = losses.token_mean(losses.subs_loss(model(xt), x0, xt, mask, t))
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    _raises_on_sync(step)


@needs_gpu
def test_cuda_graph_of_mask_steps_replays_the_eager_tokens():
    dev = torch.device("cuda")
    b, l, v, mask, steps = 3, 64, 37, 36, 8
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, l, v, generator=g).to(dev)
    alphas = torch.linspace(0.0, 1.0, steps + 1).tolist()

    def loop(x):
        for k in range(steps):
            x, _, _ = ops.mask_step(
                x, logits, mask_index=mask, alpha_t=alphas[k], alpha_s=alphas[k + 1], seed=7,
                offset=k,
            )  # fmt: skip
        return x

    start = torch.full((b, l), mask, device=dev)
    eager = loop(start.clone())
    static_in = start.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        loop(static_in)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = loop(static_in)
    graph.replay()
    assert torch.equal(static_out, eager)
    assert (eager != mask).all()  # alpha reaches 1: every position decoded
    half = start.clone()
    half[:, ::2] = torch.randint(0, mask, (b, l // 2), generator=g).to(dev)
    static_in.copy_(half)
    graph.replay()
    assert torch.equal(static_out, loop(half.clone()))


class _PositionDenoiser:
    """logits [B, L, V]: a fixed table per position plus a term of the visible tokens (one-hot by
    comparison, so no operator of the model synchronises); the mask logit is -inf."""

    def __init__(self, length: int, vocab: int, mask: int, device):
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(length, vocab, generator=g).to(device)
        self.mix = (0.5 * torch.randn(vocab, vocab, generator=g)).to(device)
        self.ids = torch.arange(vocab, device=device)
        self.is_mask = self.ids == mask

    def __call__(self, x, t=None):
        context = (x[..., None] == self.ids).float().mean(1) @ self.mix  # [B, V]
        logits = self.table[None] + context[:, None, :]
        return logits.masked_fill(self.is_mask, float("-inf"))


def _count_syncs(fn):
    """(fn()'s result, host synchronisations during it): one warm-up call, then a call under
    ``set_sync_debug_mode("warn")`` whose warnings are counted."""
    fn()
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return out, sum("synchroniz" in str(w.message) for w in caught)


@needs_gpu
def test_sync_counter_counts():
    x = torch.ones(8, device="cuda")
    _, n = _count_syncs(lambda: [float(x.sum()) for _ in range(3)])
    assert n >= 3


@needs_gpu
@pytest.mark.parametrize("sampler", ["ddpm", "ddpm_cache", "first_hitting", "remdm-cap"])
def test_cuda_sampling_loop_synchronises_at_most_once_per_step(sampler):
    length, vocab, mask, steps = 24, 17, 16, 12
    model = _PositionDenoiser(length, vocab, mask, "cuda")
    kw = {"batch_size": 8, "length": length, "mask_index": mask, "steps": steps, "seed": 3,
          "device": "cuda", "top_p": 0.9}  # fmt: skip
    res, syncs = _count_syncs(lambda: sampling.sample(model, sampler=sampler, **kw))
    assert res.x.device.type == "cuda" and not (res.x == mask).any()
    assert syncs <= res.steps, (sampler, syncs, res.steps)


@needs_gpu
def test_reduce_overhead_compiled_sampling_step_gives_the_eager_tokens():
    b, length, vocab, mask = 4, 32, 17, 16
    model = _PositionDenoiser(length, vocab, mask, "cuda")

    def step(x):
        logits = model(x)
        return ops.mask_step(
            x, logits, mask_index=mask, alpha_t=0.3, alpha_s=0.6, seed=5, offset=2
        )[0]

    start = torch.full((b, length), mask, device="cuda")
    start[:, ::3] = 2
    want = step(start.clone())
    assert (want != mask).any() and (want == mask).any()
    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):  # warm-up, recording, replay
        assert torch.equal(compiled(start.clone()), want)
