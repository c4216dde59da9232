"""MDM-Prime kernels against the seed-style materialised references (mdfast.reference).

Two ops, each at the issue's shapes (images C=256, ℓ ∈ {2,3,4,8}, L=3072, B ∈ {16,64}; text
C=50257, ℓ ∈ {2,4}, L=1024, B=4), time (median, p20, p80) and peak memory:

* ``loss``: prime_ce forward + backward (joint and elbo) on float32 logits with every digit
  masked w.p. ``p_mask`` (0.5: mid-training; 1.0: every token fully masked, the kernel's worst
  case since it walks only the consistent set).
* ``sample``: prime_sample_step (exact and marginal) with half the digits masked, at a ``mid``
  step (α_t = 0.5 → α_s = 0.52, about 1 in 25 masked digits revealed) and the ``last`` step
  (α_s = 1, every masked digit revealed: the kernel's worst case). The reference draws with
  torch's RNG (``generator=``), as the seed code does.

References that would materialise more than ``--ref-limit-gb`` are skipped (recorded as such).
Rows go to bench/results/prime.csv, the plot to bench/results/prime.png.

    python -m bench.prime                 # the default sweep (minutes on 2 cores)
    python -m bench.prime --quick         # tiny shapes, a smoke run
    python -m bench.prime --kind text --ref-limit-gb 10   # the text points with their references
"""

from __future__ import annotations

import argparse
import gc

import torch

from bench.common import (
    RESULTS,
    context_columns,
    measure,
    peak_memory_bytes,
    plot,
    timing_columns,
    write_rows,
)
from mdfast import digits as codec
from mdfast import ops, reference

CSV = "prime.csv"

SAMPLE_STEPS = {"mid": (0.5, 0.52), "last": (0.5, 1.0)}


def problem(batch, length, num_classes, ell, p_mask, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = codec.prime_base(num_classes, ell)
    n = batch * length
    x = torch.randint(0, num_classes, (n,), generator=g)
    digits = codec.encode(x, num_classes, ell)
    digits = torch.where(torch.rand(n, ell, generator=g) < p_mask, base, digits)
    logits = torch.randn(n, num_classes, generator=g, dtype=dtype)
    return logits, x, digits, base


def loss_ref_bytes(n, c, ell, mode):
    # in_v, per-digit gathers, z_v, grad: ~6 [N, C] 4-byte tensors; elbo adds [N, C, ℓ] ones
    return n * c * 4 * (6 + (2 * ell if mode == "elbo" else 0))


def sample_ref_bytes(n, c, ell, base, mode):
    return n * c * 8 * 4 + (n * ell * base * c * 4 * 2 if mode == "marginal" else 0)


def run_loss(kind, batch, length, c, ell, mode, p_mask, args, rows):
    logits, x, digits, base = problem(batch, length, c, ell, p_mask)
    shape = f"C={c} l={ell} L={length} B={batch}"

    def kernel():
        z = logits.detach().requires_grad_()
        ops.prime_ce(z, x, digits, base=base, mode=mode).sum().backward()
        return z.grad

    def ref():
        z = logits.detach().requires_grad_()
        reference.prime_ce(z, x, digits, base, mode).sum().backward()
        return z.grad

    providers = [("mdfast", kernel)]
    if loss_ref_bytes(batch * length, c, ell, mode) <= args.ref_limit_gb * 2**30:
        providers.append(("reference", ref))
    else:
        print(f"  loss {shape} {mode}: reference skipped (> {args.ref_limit_gb} GB)")
    timings = {}
    for name, fn in providers:
        t = measure(fn, warmup=1, repeat=args.repeat, max_seconds=args.max_seconds)
        gc.collect()
        mem = peak_memory_bytes(fn)
        gc.collect()
        timings[name] = (t, mem)
        rows.append(
            {
                "op": "loss_fwd_bwd",
                "kind": kind,
                "shape": shape,
                "mode": mode,
                "step": f"p_mask={p_mask}",
                "provider": name,
                "dtype": "float32",
                **timing_columns(t),
                "peak_mb": round(mem / 2**20, 1),
                **context_columns("cpu"),
            }
        )
    _report("loss", shape, mode, f"p_mask={p_mask}", timings)


def run_sample(kind, batch, length, c, ell, mode, step, args, rows):
    logits, _, digits, base = problem(batch, length, c, ell, 0.5)
    alpha_t, alpha_s = SAMPLE_STEPS[step]
    shape = f"C={c} l={ell} L={length} B={batch}"

    def kernel():
        return ops.prime_sample_step(
            logits, digits, base=base, alpha_t=alpha_t, alpha_s=alpha_s, mode=mode, seed=1, offset=2
        )

    gen = torch.Generator().manual_seed(0)

    def ref():
        return reference.prime_sample_step(
            logits, digits, base, alpha_t, alpha_s, 1.0, mode, None, generator=gen
        )

    providers = [("mdfast", kernel)]
    if sample_ref_bytes(batch * length, c, ell, base, mode) <= args.ref_limit_gb * 2**30:
        providers.append(("reference", ref))
    else:
        print(f"  sample {shape} {mode} {step}: reference skipped (> {args.ref_limit_gb} GB)")
    timings = {}
    for name, fn in providers:
        t = measure(fn, warmup=1, repeat=args.repeat, max_seconds=args.max_seconds)
        gc.collect()
        mem = peak_memory_bytes(fn)
        gc.collect()
        timings[name] = (t, mem)
        rows.append(
            {
                "op": "sample_step",
                "kind": kind,
                "shape": shape,
                "mode": mode,
                "step": step,
                "provider": name,
                "dtype": "float32",
                **timing_columns(t),
                "peak_mb": round(mem / 2**20, 1),
                **context_columns("cpu"),
            }
        )
    _report("sample", shape, mode, step, timings)


def _report(op, shape, mode, step, timings):
    k_t, k_mem = timings["mdfast"]
    line = f"  {op:6s} {shape:28s} {mode:8s} {step:12s} mdfast {k_t.median * 1e3:9.1f} ms"
    line += f" {k_mem / 2**20:8.1f} MB"
    if "reference" in timings:
        r_t, r_mem = timings["reference"]
        line += f" | reference {r_t.median * 1e3:9.1f} ms {r_mem / 2**20:8.1f} MB"
        line += (
            f" | {r_t.median / k_t.median:6.1f}x faster, {r_mem / max(k_mem, 1):7.1f}x less memory"
        )
    print(line, flush=True)


def sweep(quick: bool):
    """(op, kind, batch, length, C, ℓ, mode, step-or-p_mask) points of the run."""
    if quick:
        return [
            ("loss", "images", 2, 64, 256, 2, "joint", 0.5),
            ("loss", "text", 1, 8, 50257, 4, "elbo", 0.5),
            ("sample", "images", 2, 64, 256, 2, "exact", "last"),
            ("sample", "images", 2, 64, 256, 3, "marginal", "mid"),
        ]
    points = []
    for ell in (2, 3, 4, 8):
        for batch in (16, 64):
            for mode in ("joint", "elbo"):
                points.append(("loss", "images", batch, 3072, 256, ell, mode, 0.5))
    for ell in (2, 4):
        for p_mask in (0.5, 1.0):
            points.append(("loss", "text", 4, 1024, 50257, ell, "joint", p_mask))
        points.append(("loss", "text", 1, 1024, 50257, ell, "elbo", 0.5))
    for ell in (2, 3, 4, 8):
        for mode in ("exact", "marginal"):
            for step in ("mid", "last"):
                points.append(("sample", "images", 16, 3072, 256, ell, mode, step))
            points.append(("sample", "images", 64, 3072, 256, ell, mode, "last"))
    for ell in (2, 4):
        for mode in ("exact", "marginal"):
            for step in ("mid", "last"):
                points.append(("sample", "text", 4, 1024, 50257, ell, mode, step))
    return points


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke run)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--ref-limit-gb", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1, help="same for both providers")
    parser.add_argument("--kind", choices=["images", "text"], help="only these points")
    parser.add_argument("--op", choices=["loss", "sample"], help="only this op")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for op, kind, batch, length, c, ell, mode, extra in sweep(args.quick):
        if (args.kind and kind != args.kind) or (args.op and op != args.op):
            continue
        if op == "loss":
            run_loss(kind, batch, length, c, ell, mode, extra, args, rows)
        else:
            run_sample(kind, batch, length, c, ell, mode, extra, args, rows)
    if args.no_write or args.quick:
        return
    write_rows(CSV, rows)
    plot(
        CSV,
        RESULTS / "prime.png",
        label_cols=["op", "shape", "mode", "step"],
        title="MDM-Prime kernels vs seed-style reference (CPU, median ms)",
    )
    print(f"wrote {RESULTS / CSV} and {RESULTS / 'prime.png'}")


if __name__ == "__main__":
    main()
