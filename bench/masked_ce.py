"""Benchmark of the fused masked cross-entropy (masked_ce) and its output-projection fusion
(linear_masked_ce) against their peers, measured in one process.

    python -m bench.masked_ce                   # the device's default points (CUDA: the targets)
    python -m bench.masked_ce --device cpu --full   # the CPU grid (slow)
    python -m bench.masked_ce --quick           # tiny shapes, a smoke run

Points. CUDA: masked_ce at N=16384, V=50258, bf16 and fp32, 100 / 50 / 15% of the rows active;
linear_masked_ce at N=16384, D in {768, 2048}, V=50258, bf16, 100 / 50% active. CPU: N=4096
masked_ce and N=2048 linear points (ratios only).

masked_ce providers (forward + backward of ``loss.sum()``, ``.grad = None`` before each call;
the logits are a view of a leaf that requires grad, so every provider's gradient reaches
autograd the same way):
  mdfast          ops.masked_ce, out-of-place backward
  mdfast_inplace  the same with inplace_backward=True (gradient written into the logits buffer)
  reference       mdfast.reference.masked_ce in eager mode (mask to -inf, log_softmax, gather)
  compile         torch.compile(mdfast.reference.masked_ce)
  torch_ce        mdfast.baselines.masked_ce_cross_entropy (F.cross_entropy(reduction="none"))
  liger_ce        Liger-Kernel's LigerCrossEntropyLoss (CUDA, when it imports)
linear_masked_ce providers (gradients for hidden, weight and bias): mdfast (fused, chunked over the
active rows, fp32 weight-gradient accumulation), torch_unfused (F.linear then the reference CE),
liger_flce (LigerFusedLinearCrossEntropyLoss as shipped: weight gradient accumulated in bf16) and
liger_flce_fp32acc (accum_dtype=float32), when it imports; torch_linear_ce (torch's chunked
F.linear_cross_entropy, torch >= 2.13).

Floors: masked_ce fwd+bwd reads the active rows once and writes the N x V gradient,
(active + 1) * N * V * element bytes; linear_masked_ce does three products over the active rows,
3 * 2 * active * N * D * V FLOPs. Rows go to bench/results/masked_ce.csv, the plot beside it.
"""

from __future__ import annotations

import argparse
import functools
import gc

import torch

from bench import peers
from bench.common import (
    add_device_argument,
    add_output_arguments,
    ceilings,
    is_cuda,
    measure_row,
    plot_cases,
    skipped_row,
    write_rows,
    writes_results,
)
from mdfast import baselines, ops, reference

CSV = "masked_ce.csv"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# (N, V, dtype, active fraction)
CUDA_CE = [(16384, 50258, d, f) for d in ("bf16", "fp32") for f in (1.0, 0.5, 0.15)]
CPU_CE = [
    (4096, 50258, "fp32", 0.5),
    (4096, 50258, "bf16", 0.5),
    (4096, 50258, "fp32", 0.15),
    (4096, 50258, "fp32", 1.0),
    (4096, 4097, "fp32", 0.5),
    (4096, 30522, "bf16", 1.0),
]
CPU_CE_FULL = [
    (n, v, d, f)
    for n in (4096, 16384)
    for v in (4097, 30522, 50258)
    for d in ("fp32", "bf16")
    for f in (0.15, 0.5, 1.0)
]
QUICK_CE = [(256, 4097, "fp32", 0.5), (256, 1001, "bf16", 1.0)]
# (N, D, V, dtype, active fraction)
CUDA_LINEAR = [(16384, d, 50258, "bf16", f) for d in (768, 2048) for f in (1.0, 0.5)]
CPU_LINEAR = [(2048, 768, 50258, "bf16", 0.5), (2048, 768, 50258, "bf16", 1.0)]
CPU_LINEAR_FULL = [*CPU_LINEAR, (16384, 768, 50258, "bf16", 0.5)]
QUICK_LINEAR = [(256, 64, 4097, "bf16", 0.5)]


def _ce_providers(device) -> dict:
    """name -> (fn, role) or (None, why not)."""
    providers = {
        "mdfast": (lambda z, t, w, ex: ops.masked_ce(z, t, w, ex), "mdfast"),
        "mdfast_inplace": (
            lambda z, t, w, ex: ops.masked_ce(z, t, w, ex, inplace_backward=True),
            "mdfast",
        ),
        "reference": (reference.masked_ce, "baseline"),
        "compile": (torch.compile(reference.masked_ce, dynamic=False), "baseline"),
        "torch_ce": (baselines.masked_ce_cross_entropy, "baseline"),
    }
    liger, why = peers.liger_cross_entropy()
    if liger is not None and not is_cuda(device):
        liger, why = None, "Liger-Kernel runs on CUDA only"
    providers["liger_ce"] = (liger, "baseline") if liger is not None else (None, why)
    return providers


def _linear_providers(device) -> dict:
    providers = {
        "mdfast": (ops.linear_masked_ce, "mdfast"),
        "torch_unfused": (reference.linear_masked_ce, "baseline"),
    }
    for name, accum in (("liger_flce", None), ("liger_flce_fp32acc", torch.float32)):
        liger, why = peers.liger_fused_linear_cross_entropy(accum)
        if liger is not None and not is_cuda(device):
            liger, why = None, "Liger-Kernel runs on CUDA only"
        providers[name] = (liger, "baseline") if liger is not None else (None, why)
    native, why = peers.torch_linear_cross_entropy()
    providers["torch_linear_ce"] = (native, "baseline") if native is not None else (None, why)
    return providers


def _ce_inputs(n, v, dtype, frac, device, seed=0):
    """Random logits, targets and a weight of 2 on ``frac`` of the rows (0 elsewhere), drawn on
    ``device`` (GPU-sized inputs would take seconds to draw on the host)."""
    g = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(n, v, generator=g, device=device).to(dtype)
    target = torch.randint(0, v - 1, (n,), generator=g, device=device)
    weight = torch.zeros(n, device=device)
    weight[torch.randperm(n, generator=g, device=device)[: round(frac * n)]] = 2.0
    return logits, target, weight


def _ce_step(fn, leaf, target, weight, exclude):
    def step():
        leaf.grad = None
        loss = fn(leaf.view(leaf.shape), target, weight, exclude)
        loss.sum().backward()

    return step


def _linear_step(fn, leaves, target, row_weight, exclude):
    def step():
        for leaf in leaves:
            leaf.grad = None
        loss = fn(*leaves, target, row_weight, exclude)
        loss.sum().backward()

    return step


def _timing(args) -> dict:
    return {"warmup": args.warmup, "repeat": args.repeat, "max_seconds": args.max_seconds}


def bench_ce(cases, device, args, ceil) -> list[dict]:
    providers = _ce_providers(device)
    timing = _timing(args)
    rows = []
    for n, v, dname, frac in cases:
        logits, target, weight = _ce_inputs(n, v, DTYPES[dname], frac, device)
        exclude = v - 1
        elem = logits.element_size()
        case = f"N={n} V={v} {dname} active={frac}"
        shape = {"mode": "fwd+bwd", "N": n, "V": v, "D": "", "dtype": dname, "masked_frac": frac}
        case_rows = []
        for name, (fn, role) in providers.items():
            if fn is None:  # the second item says why
                case_rows.append(skipped_row("masked_ce", case, name, role, device, **shape))
                continue
            leaf = logits.clone().requires_grad_()
            case_rows.append(
                measure_row(
                    "masked_ce",
                    case,
                    name,
                    role,
                    _ce_step(fn, leaf, target, weight, exclude),
                    device,
                    **timing,
                    ceil=ceil,
                    nbytes=(frac + 1.0) * n * v * elem,
                    **shape,
                )
            )
            del leaf
            gc.collect()
        fwd_shape = {**shape, "mode": "fwd"}
        with torch.no_grad():  # the forward alone (evaluation)
            for name in ("mdfast", "reference"):
                fn, role = providers[name]
                case_rows.append(
                    measure_row(
                        "masked_ce_fwd",
                        case,
                        name,
                        role,
                        functools.partial(fn, logits, target, weight, exclude),
                        device,
                        **timing,
                        ceil=ceil,
                        nbytes=frac * n * v * elem,
                        **fwd_shape,
                    )
                )
        if args.write:  # per case: an interrupted run keeps what it measured
            write_rows(CSV, case_rows)
        rows += case_rows
        del logits
        gc.collect()
    return rows


def _linear_inputs(n, d, v, dtype, frac, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, device=device).to(dtype)
    weight = (torch.randn(v, d, generator=g, device=device) / d**0.5).to(dtype)
    bias = (torch.randn(v, generator=g, device=device) * 0.1).to(dtype)
    target = torch.randint(0, v - 1, (n,), generator=g, device=device)
    row_weight = torch.zeros(n, device=device)
    row_weight[torch.randperm(n, generator=g, device=device)[: round(frac * n)]] = 1.0
    return hidden, weight, bias, target, row_weight


def bench_linear(cases, device, args, ceil) -> list[dict]:
    providers = _linear_providers(device)
    timing = _timing(args)
    rows = []
    for n, d, v, dname, frac in cases:
        hidden, weight, bias, target, row_weight = _linear_inputs(
            n, d, v, DTYPES[dname], frac, device
        )
        case = f"N={n} D={d} V={v} {dname} active={frac}"
        shape = {"mode": "fwd+bwd", "N": n, "V": v, "D": d, "dtype": dname, "masked_frac": frac}
        case_rows = []
        for name, (fn, role) in providers.items():
            if fn is None:
                case_rows.append(skipped_row("linear_masked_ce", case, name, role, device, **shape))
                continue
            leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
            step = _linear_step(fn, leaves, target, row_weight, v - 1)
            case_rows.append(
                measure_row(
                    "linear_masked_ce",
                    case,
                    name,
                    role,
                    step,
                    device,
                    **timing,
                    ceil=ceil,
                    flops=3 * 2 * frac * n * d * v,
                    nbytes=(v * d + 2 * n * d) * hidden.element_size(),
                    **shape,
                )
            )
            del leaves, step
            gc.collect()
        if args.write:
            write_rows(CSV, case_rows)
        rows += case_rows
    return rows


def plot_results(path=CSV):
    return plot_cases(path, "masked_ce / linear_masked_ce: median ms (latest run per device)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device_argument(parser)
    parser.add_argument("--full", action="store_true", help="the CPU grid (N up to 16384)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke run)")
    parser.add_argument("--only", choices=["ce", "linear"], help="one of the two ops")
    parser.add_argument("--repeat", type=int, default=None, help="default: 10 CUDA, 3 CPU")
    parser.add_argument("--warmup", type=int, default=None, help="default: 3 CUDA, 1 CPU")
    parser.add_argument("--max-seconds", type=float, default=15.0)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.write = writes_results(args)
    cuda = is_cuda(args.device)
    args.repeat = args.repeat or (10 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    if args.quick:
        ce, linear = QUICK_CE, QUICK_LINEAR
    elif cuda:
        ce, linear = CUDA_CE, CUDA_LINEAR
    else:
        ce, linear = (CPU_CE_FULL, CPU_LINEAR_FULL) if args.full else (CPU_CE, CPU_LINEAR)
    ceil = ceilings(args.device)
    if args.only != "linear":
        bench_ce(ce, args.device, args, ceil)
    if args.only != "ce":
        bench_linear(linear, args.device, args, ceil)
    if args.write and not args.no_plot:
        print(f"plot: {plot_results()}")


if __name__ == "__main__":
    main()
