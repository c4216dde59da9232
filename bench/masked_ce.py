"""Benchmark of the fused masked cross-entropy (masked_ce) and its output-projection fusion
(linear_masked_ce) against the reference twins (mdfast.reference) and PyTorch baselines
(mdfast.baselines), measured in one process.

    python -m bench.masked_ce                 # default sweep: the targets + a few other points
    python -m bench.masked_ce --full          # the issue's grid (slow on CPU)
    python -m bench.masked_ce --linear-full   # add linear_masked_ce at N=16384, D=768, V=50258

masked_ce providers (forward + backward of ``loss.sum()``; the logits are a view of a leaf that
requires grad, so each provider's gradient is handed to autograd the same way):
  mdfast          torch.ops.mdfast.masked_ce, out-of-place backward
  mdfast_inplace  the same with inplace_backward=True (gradient written into the logits buffer)
  reference       mdfast.reference.masked_ce in eager mode (mask to -inf, log_softmax, gather)
  compile         torch.compile(mdfast.reference.masked_ce)
  torch_ce        mdfast.baselines.masked_ce_cross_entropy (F.cross_entropy(reduction="none"))
  liger           Liger-Kernel's cross-entropy, only when importable (needs triton and a GPU)
linear_masked_ce providers: mdfast (fused, chunked) and reference (F.linear then the reference
cross-entropy), forward + backward of ``loss.sum()`` with gradients for hidden, weight and bias.

Rows go to bench/results/masked_ce.csv (medians with p20/p80, peak memory above the inputs) and
a plot to bench/results/masked_ce.png.
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools

import torch

from bench.common import (
    context_columns,
    measure,
    peak_memory_bytes,
    plot,
    timing_columns,
    write_rows,
)
from mdfast import baselines, ops, reference

CSV = "masked_ce.csv"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# (N, V, dtype, masked fraction): the CPU target point first
DEFAULT_CE = [
    (4096, 50258, "fp32", 0.5),
    (4096, 50258, "bf16", 0.5),
    (4096, 50258, "fp32", 0.15),
    (4096, 50258, "fp32", 1.0),
    (4096, 4097, "fp32", 0.5),
    (4096, 30522, "bf16", 1.0),
]
FULL_CE = list(
    itertools.product([4096, 16384], [4097, 30522, 50258], ["fp32", "bf16"], [0.15, 0.5, 1.0])
)
# (N, D, V, dtype, masked fraction)
DEFAULT_LINEAR = [(2048, 768, 50258, "bf16", 0.5), (2048, 768, 50258, "bf16", 1.0)]
TARGET_LINEAR = [(16384, 768, 50258, "bf16", 0.5)]


def _liger_ce():
    """Liger-Kernel's cross-entropy as a per-row provider, or the reason it cannot run."""
    try:
        from liger_kernel.ops.cross_entropy import LigerCrossEntropyFunction
    except Exception as exc:  # ImportError, or triton failing to initialise without a GPU
        return None, f"liger-kernel not importable: {type(exc).__name__}: {exc}"

    def liger(logits, target, weight, exclude):
        # Liger reduces internally; ignore_index stands in for zero-weight rows
        t = torch.where(weight != 0, target, -100)
        return LigerCrossEntropyFunction.apply(logits, t, None, -100, 0.0, 0.0, "sum")[0]

    return liger, ""


def _ce_providers(device):
    providers = {
        "mdfast": lambda z, t, w, ex: ops.masked_ce(z, t, w, ex),
        "mdfast_inplace": lambda z, t, w, ex: ops.masked_ce(z, t, w, ex, inplace_backward=True),
        "reference": reference.masked_ce,
        "compile": torch.compile(reference.masked_ce, dynamic=False),
        "torch_ce": baselines.masked_ce_cross_entropy,
    }
    liger, why = _liger_ce()
    if liger is not None and torch.device(device).type == "cuda":
        providers["liger"] = liger
    elif liger is not None:
        why = "liger-kernel needs a CUDA device"
    return providers, why


def _ce_inputs(n, v, dtype, frac, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g, dtype=torch.float32).to(dtype).to(device)
    target = torch.randint(0, v - 1, (n,), generator=g).to(device)
    weight = torch.zeros(n)
    weight[torch.randperm(n, generator=g)[: round(frac * n)]] = 1.0
    return logits, target, (weight * 2.0).to(device)


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


def bench_ce(cases, device, *, repeat, warmup, max_seconds) -> list[dict]:
    providers, liger_note = _ce_providers(device)
    rows = []
    ctx = context_columns(device)
    for n, v, dname, frac in cases:
        dtype = DTYPES[dname]
        logits, target, weight = _ce_inputs(n, v, dtype, frac, device)
        exclude = v - 1
        elem = logits.element_size()
        base = {"op": "masked_ce", "mode": "fwd+bwd", "N": n, "V": v, "D": "", "dtype": dname}
        base["masked_frac"] = frac
        for name, fn in providers.items():
            leaf = logits.clone().requires_grad_()
            step = _ce_step(fn, leaf, target, weight, exclude)

            t = measure(step, warmup=warmup, repeat=repeat, device=device, max_seconds=max_seconds)
            leaf.grad = None
            gc.collect()
            peak = peak_memory_bytes(step, device)
            leaf.grad = None
            row = {**base, "provider": name, **timing_columns(t), "peak_mem_bytes": peak}
            row["peak_over_logits"] = round(peak / (n * v * elem), 3)
            rows.append({**row, "note": "", **ctx})
            print(
                f"masked_ce N={n} V={v} {dname} frac={frac} {name:15s} "
                f"median {t.median * 1e3:9.1f} ms  peak {peak / 2**20:8.0f} MiB "
                f"({row['peak_over_logits']} x logits)",
                flush=True,
            )
            del leaf, step
            gc.collect()
        if liger_note:
            rows.append({**base, "provider": "liger", "note": liger_note, **ctx})
        # forward alone for mdfast vs reference (the training loop's eval path)
        for name in ("mdfast", "reference"):
            t = measure(
                functools.partial(providers[name], logits, target, weight, exclude),
                warmup=warmup,
                repeat=repeat,
                device=device,
                max_seconds=max_seconds,
            )
            rows.append({**base, "mode": "fwd", "provider": name, **timing_columns(t), **ctx})
        del logits
        gc.collect()
    return rows


def _linear_inputs(n, d, v, dtype, frac, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g).to(dtype).to(device)
    weight = (torch.randn(v, d, generator=g) / d**0.5).to(dtype).to(device)
    bias = torch.zeros(v).to(dtype).to(device)
    target = torch.randint(0, v - 1, (n,), generator=g).to(device)
    row_weight = torch.zeros(n)
    row_weight[torch.randperm(n, generator=g)[: round(frac * n)]] = 1.0
    return hidden, weight, bias, target, row_weight.to(device)


def bench_linear(cases, device, *, repeat, warmup, max_seconds) -> list[dict]:
    providers = {"mdfast": ops.linear_masked_ce, "reference": reference.linear_masked_ce}
    rows = []
    ctx = context_columns(device)
    for n, d, v, dname, frac in cases:
        dtype = DTYPES[dname]
        hidden, weight, bias, target, row_weight = _linear_inputs(n, d, v, dtype, frac, device)
        leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
        base = {"op": "linear_masked_ce", "mode": "fwd+bwd", "N": n, "V": v, "D": d}
        base.update(dtype=dname, masked_frac=frac)
        for name, fn in providers.items():
            step = _linear_step(fn, leaves, target, row_weight, v - 1)

            big = n * v >= 2**29  # the full-size target point: two timed calls, no warm-up
            t = measure(
                step,
                warmup=0 if big else warmup,
                repeat=min(repeat, 2) if big else repeat,
                device=device,
                max_seconds=max_seconds,
            )
            for leaf in leaves:
                leaf.grad = None
            gc.collect()
            peak = peak_memory_bytes(step, device)
            for leaf in leaves:
                leaf.grad = None
            row = {**base, "provider": name, **timing_columns(t), "peak_mem_bytes": peak}
            row["peak_over_logits"] = round(peak / (n * v * hidden.element_size()), 3)
            rows.append({**row, "note": "", **ctx})
            print(
                f"linear_masked_ce N={n} D={d} V={v} {dname} frac={frac} {name:10s} "
                f"median {t.median * 1e3:9.1f} ms  peak {peak / 2**20:8.0f} MiB",
                flush=True,
            )
            gc.collect()
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full", action="store_true", help="the issue's full grid")
    parser.add_argument(
        "--linear-full", action="store_true", help="linear_masked_ce at N=16384 (slow on CPU)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=15.0)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    kw = {"repeat": args.repeat, "warmup": args.warmup, "max_seconds": args.max_seconds}
    rows = bench_ce(FULL_CE if args.full else DEFAULT_CE, args.device, **kw)
    write_rows(CSV, rows)
    linear = DEFAULT_LINEAR + (TARGET_LINEAR if args.linear_full or args.full else [])
    rows = bench_linear(linear, args.device, **kw)
    write_rows(CSV, rows)
    if not args.no_plot:
        png = plot(
            CSV,
            label_cols=["op", "mode", "N", "D", "V", "dtype", "masked_frac"],
            title="masked_ce / linear_masked_ce: median ms (latest run per device)",
            where=lambda r: r.get("median_ms") not in (None, ""),
        )
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
