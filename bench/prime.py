"""MDM-Prime kernels against the seed-style materialised references (mdfast.reference).

Two ops, time (median, p20, p80), peak memory and floor:

* ``loss``: prime_ce forward + backward (joint and elbo) on float32 logits with every digit
  masked w.p. ``p_mask`` (0.5: mid-training; 1.0: every token fully masked, the kernel's worst
  case since it walks only the consistent set). Floor: read each row's consistent set once and
  write the N x C gradient, (sum_i |V_i| + N C) x 4 bytes.
* ``sample``: prime_sample_step (exact and marginal) with half the digits masked, at a ``mid``
  step (alpha_t = 0.5 -> alpha_s = 0.52, about 1 in 25 masked digits revealed) and the ``last``
  step (alpha_s = 1, every masked digit revealed: the kernel's worst case). The reference draws
  with torch's RNG (``generator=``), as the seed code does. Floor: read the consistent sets of
  the rows that reveal a digit, read and write the digits.

Points. CUDA: text C = 50257, L = 1024, B = 16 (N = 16384), l in {2, 4} (the GPU targets) and
images C = 256, L = 3072, B = 64. CPU: images B in {16, 64} and text B = 4 (N = 4096).
References that would materialise more than ``--ref-limit-gb`` are skipped (recorded as such).
Rows go to bench/results/prime.csv, the plot to bench/results/prime.png.

    python -m bench.prime                 # the device's default sweep
    python -m bench.prime --quick         # tiny shapes, a smoke run
    python -m bench.prime --kind text --ref-limit-gb 10   # the text points with their references
"""

from __future__ import annotations

import argparse
import gc

import torch

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
from mdfast import digits as codec
from mdfast import ops, reference

CSV = "prime.csv"

SAMPLE_STEPS = {"mid": (0.5, 0.52), "last": (0.5, 1.0)}


def problem(batch, length, num_classes, ell, p_mask, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator(device=device).manual_seed(seed)
    base = codec.prime_base(num_classes, ell)
    n = batch * length
    x = torch.randint(0, num_classes, (n,), generator=g, device=device)
    digits = codec.encode(x, num_classes, ell)
    masked = torch.rand(n, ell, generator=g, device=device) < p_mask
    digits = torch.where(masked, base, digits)
    logits = torch.randn(n, num_classes, generator=g, device=device, dtype=dtype)
    return logits, x, digits, base


def consistent_sizes(digits, num_classes, base, chunk=4096) -> torch.Tensor:
    """|V_i| per row (int64[N]), in chunks of rows so the [rows, C] mask stays small."""
    return torch.cat(
        [reference.prime_consistent_mask(d, num_classes, base).sum(1) for d in digits.split(chunk)]
    )


def loss_ref_bytes(n, c, ell, mode):
    # in_v, per-digit gathers, z_v, grad: ~6 [N, C] 4-byte tensors; elbo adds [N, C, ℓ] ones
    return n * c * 4 * (6 + (2 * ell if mode == "elbo" else 0))


def sample_ref_bytes(n, c, ell, base, mode):
    return n * c * 8 * 4 + (n * ell * base * c * 4 * 2 if mode == "marginal" else 0)


def _run(op, case, providers, device, args, ceil, nbytes, shape) -> list[dict]:
    rows = []
    for name, fn in providers:
        if fn is None:
            why = f"reference skipped: would materialise > {args.ref_limit_gb} GB"
            rows.append(skipped_row(op, case, name, why, device, **shape))
            continue
        role = "mdfast" if name == "mdfast" else "baseline"
        rows.append(
            measure_row(
                op,
                case,
                name,
                role,
                fn,
                device,
                warmup=1,
                repeat=args.repeat,
                max_seconds=args.max_seconds,
                ceil=ceil,
                nbytes=nbytes,
                **shape,
            )
        )
        gc.collect()
    return rows


def run_loss(kind, batch, length, c, ell, mode, p_mask, device, args, ceil):
    logits, x, digits, base = problem(batch, length, c, ell, p_mask, device=device)
    n = batch * length

    def kernel():
        z = logits.detach().requires_grad_()
        ops.prime_ce(z, x, digits, base=base, mode=mode).sum().backward()
        return z.grad

    def ref():
        z = logits.detach().requires_grad_()
        reference.prime_ce(z, x, digits, base, mode).sum().backward()
        return z.grad

    fits = loss_ref_bytes(n, c, ell, mode) <= args.ref_limit_gb * 2**30
    walked = int(consistent_sizes(digits, c, base).sum())
    case = f"{kind} C={c} l={ell} L={length} B={batch} {mode} p_mask={p_mask}"
    shape = {"kind": kind, "C": c, "l": ell, "L": length, "B": batch, "mode": mode}
    shape.update(step=f"p_mask={p_mask}", dtype="float32", consistent_classes=walked)
    return _run(
        "prime_ce",
        case,
        [("mdfast", kernel), ("reference", ref if fits else None)],
        device,
        args,
        ceil,
        (walked + n * c) * 4,
        shape,
    )


def run_sample(kind, batch, length, c, ell, mode, step, device, args, ceil):
    logits, _, digits, base = problem(batch, length, c, ell, 0.5, device=device)
    alpha_t, alpha_s = SAMPLE_STEPS[step]
    n = batch * length

    def kernel():
        return ops.prime_sample_step(
            logits, digits, base=base, alpha_t=alpha_t, alpha_s=alpha_s, mode=mode, seed=1, offset=2
        )

    gen = torch.Generator(device=device).manual_seed(0)

    def ref():
        return reference.prime_sample_step(
            logits, digits, base, alpha_t, alpha_s, 1.0, mode, None, generator=gen
        )

    fits = sample_ref_bytes(n, c, ell, base, mode) <= args.ref_limit_gb * 2**30
    revealing = (kernel() != digits).any(1)
    walked = int(consistent_sizes(digits[revealing], c, base).sum()) if revealing.any() else 0
    case = f"{kind} C={c} l={ell} L={length} B={batch} {mode} {step}"
    shape = {"kind": kind, "C": c, "l": ell, "L": length, "B": batch, "mode": mode, "step": step}
    shape.update(dtype="float32", consistent_classes=walked)
    return _run(
        "prime_sample_step",
        case,
        [("mdfast", kernel), ("reference", ref if fits else None)],
        device,
        args,
        ceil,
        walked * 4 + n * ell * 8 * 2,
        shape,
    )


def sweep(quick: bool, cuda: bool):
    """(op, kind, batch, length, C, ℓ, mode, step-or-p_mask) points of the run."""
    if quick:
        return [
            ("loss", "images", 2, 64, 256, 2, "joint", 0.5),
            ("loss", "text", 1, 8, 50257, 4, "elbo", 0.5),
            ("sample", "images", 2, 64, 256, 2, "exact", "last"),
            ("sample", "images", 2, 64, 256, 3, "marginal", "mid"),
        ]
    points = []
    if cuda:
        for ell in (2, 4):
            for p_mask in (0.5, 1.0):
                points.append(("loss", "text", 16, 1024, 50257, ell, "joint", p_mask))
            points.append(("loss", "text", 16, 1024, 50257, ell, "elbo", 0.5))
            for mode in ("exact", "marginal"):
                for step in ("mid", "last"):
                    points.append(("sample", "text", 16, 1024, 50257, ell, mode, step))
        for ell in (2, 4, 8):
            for mode in ("joint", "elbo"):
                points.append(("loss", "images", 64, 3072, 256, ell, mode, 0.5))
            for mode in ("exact", "marginal"):
                points.append(("sample", "images", 64, 3072, 256, ell, mode, "last"))
        return points
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


def plot_results(path=CSV):
    return plot_cases(
        path, "MDM-Prime kernels vs seed-style reference: median ms (latest run per device)"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_argument(parser)
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help="default: 10 CUDA, 3 CPU")
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--ref-limit-gb", type=float, default=None, help="default: 40 CUDA, 4 CPU")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads, same for both")
    parser.add_argument("--kind", choices=["images", "text"], help="only these points")
    parser.add_argument("--op", choices=["loss", "sample"], help="only this op")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    cuda = is_cuda(args.device)
    args.repeat = args.repeat or (10 if cuda else 3)
    if args.ref_limit_gb is None:
        args.ref_limit_gb = 40.0 if cuda else 4.0
    write = writes_results(args)
    torch.set_num_threads(args.threads)
    ceil = ceilings(args.device)
    for op, kind, batch, length, c, ell, mode, extra in sweep(args.quick, cuda):
        if (args.kind and kind != args.kind) or (args.op and op != args.op):
            continue
        run = run_loss if op == "loss" else run_sample
        rows = run(kind, batch, length, c, ell, mode, extra, args.device, args, ceil)
        if write:
            write_rows(CSV, rows)
    if write and not args.no_plot:
        print(f"plot: {plot_results()}")


if __name__ == "__main__":
    main()
