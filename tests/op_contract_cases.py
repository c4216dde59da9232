"""The bad-input table of every op, and the function that runs one case in a child process.

Each case starts from good arguments of one op, changes one thing, and names the error the op's
contract promises: the exception type and the argument named in the message (plus, for value
checks, the row). ``tests/test_op_contract.py`` runs every case through the compiled kernel, the
pure-PyTorch reference and the raw ``torch.ops.mdfast.*`` call, each in its own process, so that
a crash fails one test instead of killing the test worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    op: str
    change: Callable[[dict], None]  # mutates the good keyword arguments of the wrapper
    error: type[Exception]
    arg: str  # the argument the message must name
    match: str = ""  # a further regex the message must match
    values: bool = False  # a check of tensor values: off the CPU only with validation "full"
    raw: bool = True  # the raw op takes this argument as the wrapper does
    cuda_only: bool = False  # needs two devices


def _set(**changes):
    return lambda kw: kw.update(changes)


def _edit(name: str, fn):
    return lambda kw: kw.update({name: fn(kw[name].clone())})


def _put(t: torch.Tensor, index, value) -> torch.Tensor:
    t[index] = value
    return t


# ------------------------------------------------------------------------------- good arguments


def _prime_problem(device):
    g = torch.Generator().manual_seed(0)
    num_classes, ell, base = 256, 2, 16
    target = torch.randint(0, num_classes, (8,), generator=g)
    digits = torch.stack([target // base, target % base], 1)
    digits = torch.where(torch.rand(8, ell, generator=g) < 0.5, base, digits)
    digits[3] = torch.tensor([1, base])
    target[3] = 16 * 1 + 4
    logits = 3 * torch.randn(8, num_classes, generator=g, dtype=torch.float64)
    return logits.to(device), target.to(device), digits.to(device), base


def good_arguments(op: str, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    def tensor(values, **kw):
        return torch.tensor(values, **kw).to(device)

    if op == "philox4x32":
        return {
            "counter": torch.ones(3, 4, dtype=torch.int64, device=device),
            "key": torch.ones(2, dtype=torch.int64, device=device),
        }
    if op == "uniform":
        return {"shape": (4,), "seed": 1, "offset": 0, "device": device}
    if op == "uniform_rows":
        return {"offsets": tensor([0, 1 << 32, 5], dtype=torch.int64), "n": 4, "seed": 1}
    if op == "masked_ce":
        return {
            "logits": randn(5, 11),
            "target": tensor([0, 1, 2, 3, 4]),
            "weight": tensor([1.0, 0.0, 2.0, 1.0, 0.5]),
        }
    if op == "linear_masked_ce":
        return {
            "hidden": randn(6, 4),
            "weight": randn(9, 4),
            "bias": randn(9),
            "target": tensor([0, 1, 2, 3, 4, 5]),
            "row_weight": torch.ones(6, device=device),
        }
    if op == "sample_x0":
        return {"logits": randn(3, 10), "seed": 1, "offset": 0}
    if op == "mask_step":
        return {
            "x": torch.full((2, 6), 9, device=device),
            "logits": randn(2, 6, 10),
            "mask_index": 9,
            "alpha_t": 0.2,
            "alpha_s": 0.4,
            "seed": 1,
            "offset": 0,
        }
    logits, target, digits, base = _prime_problem(device)
    if op == "prime_ce":
        return {"logits": logits, "target": target, "digits": digits, "base": base, "mode": "elbo"}
    assert op == "prime_sample_step", op
    return {
        "logits": logits,
        "digits": digits,
        "base": base,
        "alpha_t": 0.3,
        "alpha_s": 0.6,
        "seed": 1,
        "offset": 0,
    }


# ------------------------------------------------------------------------------- the raw ops


def _as_tensor(value, shape, device):
    if isinstance(value, torch.Tensor):
        return value
    return torch.full(shape, float(value), dtype=torch.float64, device=device)


def call_raw(op: str, kw: dict):
    """The ``torch.ops.mdfast`` call the wrapper makes, with the arguments as given (scalars that
    the schema takes as tensors become tensors, nothing is checked)."""
    ops = torch.ops.mdfast
    if op == "philox4x32":
        return ops.philox4x32(kw["counter"], kw["key"])
    if op == "uniform":
        out = torch.empty(kw["shape"], dtype=kw.get("dtype", torch.float64), device=kw["device"])
        return ops.uniform_out(out, kw["seed"], kw["offset"])
    if op == "uniform_rows":
        offsets = kw["offsets"]
        shape = (offsets.shape[0], kw["n"])
        out = torch.empty(shape, dtype=kw.get("dtype", torch.float64), device=offsets.device)
        return ops.uniform_rows_out(out, kw["seed"], offsets)
    if op == "masked_ce":
        return ops.masked_ce(
            kw["logits"], kw["target"], kw.get("weight"), kw.get("exclude_index", -1), False
        )
    if op == "linear_masked_ce":
        args = [kw[k] for k in ("hidden", "weight", "bias", "target", "row_weight")]
        return ops.linear_masked_ce(*args, kw.get("exclude_index", -1), kw.get("chunk_rows"))
    sampling = [
        float(kw.get("temperature", 1.0)),
        float(kw.get("top_p", 1.0)),
        kw.get("top_k", 0),
    ]
    if op == "sample_x0":
        exclude = kw.get("exclude_index", -1)
        return ops.sample_x0(
            kw["logits"], kw.get("rows"), *sampling, exclude, kw.get("nucleus", "remdm"),
            kw["seed"], kw["offset"],
        )  # fmt: skip
    if op == "mask_step":
        x = kw["x"]
        b = (x.shape[0] if x.dim() == 2 else 1,)
        remask = kw.get("remask")
        if remask is not None:
            remask = _as_tensor(remask, tuple(x.shape), x.device)
        return ops.mask_step(
            x, kw["logits"], _as_tensor(kw["alpha_t"], b, x.device),
            _as_tensor(kw["alpha_s"], b, x.device), remask,
            kw.get("confidence"), kw["mask_index"], sampling[0], sampling[1], sampling[2],
            kw.get("nucleus", "remdm"), kw["seed"], kw["offset"],
        )  # fmt: skip
    if op == "prime_ce":
        return ops.prime_ce(
            kw["logits"], kw["target"], kw["digits"], kw["base"], kw.get("mode", "joint"),
            kw.get("weight"),
        )  # fmt: skip
    return ops.prime_sample_step(
        kw["logits"], kw["digits"], kw["base"], float(kw["alpha_t"]), float(kw["alpha_s"]),
        float(kw.get("temperature", 1.0)), kw.get("mode", "exact"), kw.get("fixed_digits"),
        kw["seed"], kw["offset"],
    )  # fmt: skip


# ------------------------------------------------------------------------------- the table

I64, F32, F64 = torch.int64, torch.float32, torch.float64
RT, VE, TE, IE = RuntimeError, ValueError, TypeError, IndexError

CASES: dict[str, Case] = {
    # philox4x32
    "philox4x32/counter-int32": Case(
        "philox4x32", _edit("counter", lambda t: t.int()), RT, "counter"
    ),
    "philox4x32/counter-3-cols": Case(
        "philox4x32", _edit("counter", lambda t: t[:, :3]), RT, "counter"
    ),
    "philox4x32/counter-1d": Case("philox4x32", _edit("counter", lambda t: t[0]), RT, "counter"),
    "philox4x32/key-3": Case(
        "philox4x32", _edit("key", lambda t: torch.cat([t, t[:1]])), RT, "key"
    ),
    "philox4x32/key-float": Case("philox4x32", _edit("key", lambda t: t.float()), RT, "key"),
    # uniform (its raw op writes into a given buffer: seed, offset and dtype compare)
    "uniform/seed-negative": Case("uniform", _set(seed=-1), VE, "seed"),
    "uniform/offset-negative": Case("uniform", _set(offset=-5), VE, "offset"),
    "uniform/seed-2^63": Case("uniform", _set(seed=2**63), VE, "seed", raw=False),
    "uniform/seed-float": Case("uniform", _set(seed=1.5), TE, "seed", raw=False),
    "uniform/dtype-half": Case("uniform", _set(dtype=torch.float16), VE, "dtype"),
    "uniform/shape-negative": Case("uniform", _set(shape=(3, -1)), VE, "shape", raw=False),
    # uniform_rows (its raw op writes into a given [R, n] buffer)
    "uniform_rows/offsets-int32": Case(
        "uniform_rows", _edit("offsets", lambda t: t.int()), RT, "offsets"
    ),
    "uniform_rows/offsets-2d": Case(
        "uniform_rows", _edit("offsets", lambda t: t[None]), RT, "offsets"
    ),
    "uniform_rows/seed-negative": Case("uniform_rows", _set(seed=-1), VE, "seed"),
    "uniform_rows/seed-float": Case("uniform_rows", _set(seed=1.5), TE, "seed", raw=False),
    "uniform_rows/dtype-half": Case("uniform_rows", _set(dtype=torch.float16), VE, "dtype"),
    "uniform_rows/n-negative": Case("uniform_rows", _set(n=-4), VE, "n", raw=False),
    # masked_ce
    "masked_ce/target-too-large": Case(
        "masked_ce", _edit("target", lambda t: _put(t, 3, 11)), VE, "target", "row 3", values=True
    ),
    "masked_ce/target-negative": Case(
        "masked_ce", _edit("target", lambda t: _put(t, 2, -1)), VE, "target", "row 2", values=True
    ),
    "masked_ce/target-excluded": Case(
        "masked_ce",
        lambda kw: kw.update(exclude_index=7, target=_put(kw["target"].clone(), 4, 7)),
        VE,
        "target",
        "exclude_index=7 at row 4",
        values=True,
    ),
    "masked_ce/weight-negative": Case(
        "masked_ce",
        _edit("weight", lambda t: _put(t, 2, -0.5)),
        VE,
        "weight",
        "non-negative.*row 2",
        values=True,
    ),
    "masked_ce/target-int32": Case("masked_ce", _edit("target", lambda t: t.int()), RT, "target"),
    "masked_ce/target-short": Case("masked_ce", _edit("target", lambda t: t[:4]), RT, "target"),
    "masked_ce/weight-short": Case("masked_ce", _edit("weight", lambda t: t[:4]), RT, "weight"),
    "masked_ce/weight-half": Case("masked_ce", _edit("weight", lambda t: t.half()), RT, "weight"),
    "masked_ce/logits-1d": Case("masked_ce", _edit("logits", lambda t: t[0]), RT, "logits"),
    "masked_ce/logits-int": Case("masked_ce", _edit("logits", lambda t: t.long()), RT, "logits"),
    "masked_ce/exclude-too-large": Case("masked_ce", _set(exclude_index=11), VE, "exclude_index"),
    "masked_ce/exclude-below-minus-1": Case(
        "masked_ce", _set(exclude_index=-2), VE, "exclude_index"
    ),
    "masked_ce/weight-requires-grad": Case(
        "masked_ce", _edit("weight", lambda t: t.requires_grad_()), VE, "weight", raw=False
    ),
    "masked_ce/target-other-device": Case(
        "masked_ce", _edit("target", lambda t: t.cpu()), RT, "target", cuda_only=True
    ),
    "masked_ce/weight-other-device": Case(
        "masked_ce", _edit("weight", lambda t: t.cpu()), RT, "weight", cuda_only=True
    ),
    # linear_masked_ce
    "linear_masked_ce/weight-width": Case(
        "linear_masked_ce", _edit("weight", lambda t: torch.cat([t, t[:, :1]], 1)), RT, "weight"
    ),
    "linear_masked_ce/weight-dtype": Case(
        "linear_masked_ce", _edit("weight", lambda t: t.double()), RT, "weight"
    ),
    "linear_masked_ce/hidden-1d": Case(
        "linear_masked_ce", _edit("hidden", lambda t: t[0]), RT, "hidden"
    ),
    "linear_masked_ce/bias-short": Case(
        "linear_masked_ce", _edit("bias", lambda t: t[:8]), RT, "bias"
    ),
    "linear_masked_ce/target-too-large": Case(
        "linear_masked_ce",
        _edit("target", lambda t: _put(t, 2, 9)),
        VE,
        "target",
        "row 2",
        values=True,
    ),
    "linear_masked_ce/row-weight-negative": Case(
        "linear_masked_ce",
        _edit("row_weight", lambda t: _put(t, 3, -1.0)),
        VE,
        "row_weight",
        "row 3",
        values=True,
    ),
    "linear_masked_ce/row-weight-short": Case(
        "linear_masked_ce", _edit("row_weight", lambda t: t[:5]), RT, "row_weight"
    ),
    "linear_masked_ce/row-weight-none": Case(
        "linear_masked_ce", _set(row_weight=None), RT, "row_weight", raw=False
    ),
    "linear_masked_ce/exclude-too-large": Case(
        "linear_masked_ce", _set(exclude_index=9), VE, "exclude_index"
    ),
    "linear_masked_ce/chunk-rows-zero": Case(
        "linear_masked_ce", _set(chunk_rows=0), VE, "chunk_rows"
    ),
    # sample_x0
    "sample_x0/temperature-negative": Case("sample_x0", _set(temperature=-0.1), VE, "temperature"),
    "sample_x0/temperature-nan": Case(
        "sample_x0", _set(temperature=float("nan")), VE, "temperature"
    ),
    "sample_x0/top-p-zero": Case("sample_x0", _set(top_p=0.0), VE, "top_p"),
    "sample_x0/top-p-above-1": Case("sample_x0", _set(top_p=1.5), VE, "top_p"),
    "sample_x0/top-k-negative": Case("sample_x0", _set(top_k=-1), VE, "top_k"),
    "sample_x0/exclude-too-large": Case("sample_x0", _set(exclude_index=10), VE, "exclude_index"),
    "sample_x0/exclude-below-minus-1": Case(
        "sample_x0", _set(exclude_index=-2), VE, "exclude_index"
    ),
    "sample_x0/nucleus-unknown": Case("sample_x0", _set(nucleus="topp"), VE, "nucleus"),
    "sample_x0/seed-negative": Case("sample_x0", _set(seed=-1), VE, "seed"),
    "sample_x0/logits-3d": Case("sample_x0", _edit("logits", lambda t: t[None]), RT, "logits"),
    "sample_x0/logits-int": Case("sample_x0", _edit("logits", lambda t: t.long()), RT, "logits"),
    "sample_x0/logits-no-class": Case(
        "sample_x0", _edit("logits", lambda t: t[:, :0]), VE, "logits"
    ),
    "sample_x0/rows-float": Case(
        "sample_x0",
        lambda kw: kw.update(rows=torch.zeros(1, device=kw["logits"].device)),
        RT,
        "rows",
    ),
    "sample_x0/rows-2d": Case(
        "sample_x0",
        lambda kw: kw.update(rows=torch.zeros(1, 1, dtype=I64, device=kw["logits"].device)),
        RT,
        "rows",
    ),
    "sample_x0/rows-out-of-range": Case(
        "sample_x0",
        lambda kw: kw.update(rows=torch.tensor([0, 3], device=kw["logits"].device)),
        IE,
        "rows",
        values=True,
    ),
    "sample_x0/rows-other-device": Case(
        "sample_x0", lambda kw: kw.update(rows=torch.tensor([0])), RT, "rows", cuda_only=True
    ),
    "sample_x0/nan-row": Case(
        "sample_x0",
        _edit("logits", lambda t: _put(t, (2, 7), float("nan"))),
        VE,
        "logits",
        "NaN in row 2",
        values=True,
    ),
    "sample_x0/nothing-to-draw": Case(
        "sample_x0",
        _edit("logits", lambda t: _put(t, 1, float("-inf"))),
        VE,
        "logits",
        "row 1 has no class",
        values=True,
    ),
    "sample_x0/only-class-excluded": Case(
        "sample_x0",
        lambda kw: kw.update(logits=kw["logits"][:, :1].contiguous(), exclude_index=0),
        VE,
        "logits",
        "row 0 has no class",
        values=True,
    ),
    # mask_step
    "mask_step/alpha-t-negative": Case("mask_step", _set(alpha_t=-0.1), VE, "alpha_t", values=True),
    "mask_step/alpha-s-above-1": Case("mask_step", _set(alpha_s=1.5), VE, "alpha_s", values=True),
    "mask_step/alpha-s-below-alpha-t": Case(
        "mask_step", _set(alpha_t=0.6, alpha_s=0.5), VE, "alpha_s", values=True
    ),
    "mask_step/remask-above-1": Case("mask_step", _set(remask=1.2), VE, "remask", values=True),
    "mask_step/remask-negative": Case("mask_step", _set(remask=-0.5), VE, "remask", values=True),
    "mask_step/temperature-negative": Case("mask_step", _set(temperature=-1.0), VE, "temperature"),
    "mask_step/top-p-zero": Case("mask_step", _set(top_p=0.0), VE, "top_p"),
    "mask_step/top-k-negative": Case("mask_step", _set(top_k=-3), VE, "top_k"),
    "mask_step/mask-index-too-large": Case("mask_step", _set(mask_index=10), VE, "mask_index"),
    "mask_step/alpha-t-shape": Case(
        "mask_step",
        lambda kw: kw.update(alpha_t=torch.zeros(3, dtype=F64)),
        RT,
        "alpha_t",
        raw=False,
    ),
    "mask_step/remask-shape": Case(
        "mask_step",
        lambda kw: kw.update(remask=torch.zeros(5, 5, dtype=F64)),
        RT,
        "remask",
        raw=False,
    ),
    "mask_step/confidence-dtype": Case(
        "mask_step",
        lambda kw: kw.update(confidence=torch.zeros(2, 6, dtype=F64, device=kw["x"].device)),
        RT,
        "confidence",
    ),
    "mask_step/x-id-too-large": Case(
        "mask_step", _edit("x", lambda t: t.fill_(10)), VE, "x", "position 0", values=True
    ),
    "mask_step/x-id-negative": Case(
        "mask_step", _edit("x", lambda t: _put(t, (1, 2), -1)), VE, "x", "position 8", values=True
    ),
    "mask_step/x-float": Case("mask_step", _edit("x", lambda t: t.float()), RT, "x"),
    "mask_step/logits-shape": Case("mask_step", _edit("logits", lambda t: t[:, :5]), RT, "logits"),
    "mask_step/logits-other-device": Case(
        "mask_step", _edit("logits", lambda t: t.cpu()), RT, "logits", cuda_only=True
    ),
    "mask_step/nan-in-unmasking-row": Case(
        "mask_step",
        lambda kw: kw.update(
            alpha_t=0.0, alpha_s=1.0, logits=_put(kw["logits"].clone(), (0, 2, 3), float("nan"))
        ),
        VE,
        "logits",
        "NaN in row 2",
        values=True,
    ),
    # prime_ce
    "prime_ce/digit-too-large": Case(
        "prime_ce",
        _edit("digits", lambda t: _put(t, (3, 1), 17)),
        VE,
        "digits",
        "row 3",
        values=True,
    ),
    "prime_ce/digit-negative": Case(
        "prime_ce",
        _edit("digits", lambda t: _put(t, (5, 0), -1)),
        VE,
        "digits",
        "row 5",
        values=True,
    ),
    "prime_ce/target-inconsistent": Case(
        "prime_ce", _edit("target", lambda t: (t + 1) % 256), VE, "target", "row", values=True
    ),
    "prime_ce/target-too-large": Case(
        "prime_ce", _edit("target", lambda t: t.fill_(300)), VE, "target", "row 0", values=True
    ),
    "prime_ce/empty-consistent-set": Case(
        "prime_ce",
        lambda kw: kw.update(
            logits=kw["logits"][:4, :5].contiguous(),
            digits=torch.tensor([[0, 3], [3, 1], [2, 3], [1, 1]], device=kw["digits"].device),
            target=torch.tensor([0, 1, 3, 4], device=kw["target"].device),
            base=3,
        ),
        VE,
        "digits",
        r"row 2 = \[2, 3\] allows no class",
        values=True,
    ),
    "prime_ce/base-too-small": Case("prime_ce", _set(base=15), VE, "base"),
    "prime_ce/base-1": Case("prime_ce", _set(base=1), VE, "base"),
    "prime_ce/mode-unknown": Case("prime_ce", _set(mode="sum"), VE, "mode"),
    "prime_ce/weight-shape": Case(
        "prime_ce",
        lambda kw: kw.update(weight=torch.ones(7, device=kw["logits"].device)),
        RT,
        "weight",
    ),
    "prime_ce/digits-int32": Case("prime_ce", _edit("digits", lambda t: t.int()), RT, "digits"),
    "prime_ce/target-int32": Case("prime_ce", _edit("target", lambda t: t.int()), RT, "target"),
    "prime_ce/logits-int": Case("prime_ce", _edit("logits", lambda t: t.long()), RT, "logits"),
    "prime_ce/digits-rows": Case("prime_ce", _edit("digits", lambda t: t[:5]), RT, "digits"),
    "prime_ce/digits-17-columns": Case(
        "prime_ce", _edit("digits", lambda t: t[:, :1].expand(-1, 17).contiguous()), RT, "digits"
    ),
    "prime_ce/digits-other-device": Case(
        "prime_ce", _edit("digits", lambda t: t.cpu()), RT, "digits", cuda_only=True
    ),
    # prime_sample_step
    "prime_sample_step/alpha-t-negative": Case(
        "prime_sample_step", _set(alpha_t=-0.1), VE, "alpha_t"
    ),
    "prime_sample_step/alpha-s-below-alpha-t": Case(
        "prime_sample_step", _set(alpha_t=0.7, alpha_s=0.6), VE, "alpha_s"
    ),
    "prime_sample_step/alpha-s-above-1": Case(
        "prime_sample_step", _set(alpha_s=1.5), VE, "alpha_s"
    ),
    "prime_sample_step/temperature-zero": Case(
        "prime_sample_step", _set(temperature=0.0), VE, "temperature"
    ),
    "prime_sample_step/mode-unknown": Case("prime_sample_step", _set(mode="greedy"), VE, "mode"),
    "prime_sample_step/fixed-digit-out-of-range": Case(
        "prime_sample_step",
        lambda kw: kw.update(fixed_digits=torch.tensor([2], device=kw["digits"].device)),
        VE,
        "fixed_digits",
        values=True,
    ),
    "prime_sample_step/fixed-digits-float": Case(
        "prime_sample_step", _set(fixed_digits=torch.tensor([0.0])), RT, "fixed_digits"
    ),
    "prime_sample_step/seed-negative": Case("prime_sample_step", _set(seed=-1), VE, "seed"),
    "prime_sample_step/offset-negative": Case("prime_sample_step", _set(offset=-3), VE, "offset"),
    "prime_sample_step/base-too-small": Case("prime_sample_step", _set(base=3), VE, "base"),
    "prime_sample_step/digit-too-large": Case(
        "prime_sample_step",
        _edit("digits", lambda t: _put(t, (6, 0), 17)),
        VE,
        "digits",
        "row 6",
        values=True,
    ),
    "prime_sample_step/empty-consistent-set": Case(
        "prime_sample_step",
        lambda kw: kw.update(
            logits=kw["logits"][:4, :5].contiguous(),
            digits=torch.tensor([[0, 3], [3, 1], [2, 3], [1, 1]], device=kw["digits"].device),
            base=3,
        ),
        VE,
        "digits",
        "row 2",
        values=True,
    ),
}


# ------------------------------------------------------------------------------- one run


def run_case(case_id: str, path: str, device: str) -> tuple[str, str]:
    """Runs one case through ``path`` ("kernel": the wrapper with compiled kernels; "reference":
    the wrapper's pure-PyTorch fallback; "raw": the ``torch.ops.mdfast`` call; "unchecked": the
    wrapper with validation off, which must not raise) and returns (exception type, message), or
    ("", "") when nothing was raised."""
    import mdfast

    case = CASES[case_id]
    dev = torch.device(device)
    kw = good_arguments(case.op, dev)
    case.change(kw)
    if path == "reference":
        mdfast._extension.has_kernel = lambda device: False
    mode = "off" if path == "unchecked" else "full"
    with mdfast.validation(mode) if dev.type != "cpu" else contextlib.nullcontext():
        try:
            if path == "raw":
                call_raw(case.op, kw)
            else:
                getattr(mdfast.ops, case.op)(**kw)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        except Exception as exc:
            return type(exc).__name__, str(exc)
    return "", ""


def child_main(conn, fn_name: str, *args) -> None:
    """Entry point of a child process: sends back ``fn_name(*args)`` (a function of this module)."""
    conn.send(globals()[fn_name](*args))
    conn.close()


def segfault() -> None:
    """Dies by SIGSEGV, as the GPU machine's build did on every failed check (harness test)."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)
