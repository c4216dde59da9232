"""Call every mdfast op on one device at small, awkward shapes: the script compute-sanitizer runs
(memcheck, racecheck) in ``make gpu-check``, and a quick end-to-end check of the kernels.

Shapes are chosen to hit edge paths: odd row lengths of the row-keyed uniforms, odd
vocabularies (33, 1001, 4097), rows of zero weight, the excluded class, every logits dtype, the
chunked linear CE (many small chunks), top-k / top-p (both nucleus rules), temperature 0, a row
subset, remasking with and without confidence, a mask step without logits, Prime joint / elbo
losses and exact / marginal sampling with fixed digits. Each result is checked: losses and
gradients against the float64 reference, draws against the reference's tokens (same Philox
streams) and, on CUDA, against the CPU kernels' tokens (same seed, same tokens). A dispatch mode
records which ``torch.ops.mdfast`` ops ran; any registered op not exercised is an error, so a new
op must be added here.

    python tools/cuda_ops_smoke.py [--device cuda|cpu]

Exit status 0 when every check passed and every op ran; the last line says so.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mdfast import _extension, ops, reference


class OpRecorder(TorchDispatchMode):
    """Records the names of the ``mdfast::`` ops that reach the backend kernels."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "mdfast":
            self.seen.add(func._schema.name.split("::", 1)[1])
        return func(*args, **(kwargs or {}))


def registered_ops() -> set[str]:
    return {
        name.split("::", 1)[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("mdfast::")
    }


class Checks:
    def __init__(self):
        self.failures: list[str] = []
        self.count = 0

    def close(self, name, got, want, rtol, atol):
        self.count += 1
        got, want = got.detach().double().cpu(), want.detach().double().cpu()
        if got.shape != want.shape or not torch.allclose(got, want, rtol=rtol, atol=atol):
            err = (got - want).abs().max().item() if got.shape == want.shape else "shape"
            self.failures.append(f"{name}: max abs error {err} (rtol {rtol}, atol {atol})")

    def equal(self, name, got, want):
        self.count += 1
        got, want = got.cpu(), want.cpu()
        if not torch.equal(got, want):
            diff = (got != want).sum().item() if got.shape == want.shape else "shape"
            self.failures.append(f"{name}: {diff} elements differ")


def _tol(dtype):
    return {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-3}[
        dtype
    ]


def rng_ops(dev, chk):
    g = torch.Generator().manual_seed(0)
    counter = torch.randint(0, 2**32, (5, 4), generator=g, dtype=torch.int64)
    key = torch.randint(0, 2**32, (2,), generator=g, dtype=torch.int64)
    chk.equal(
        "philox4x32",
        ops.philox4x32(counter.to(dev), key.to(dev)),
        reference.philox4x32(counter, key),
    )
    for shape, dtype in (((7,), torch.float64), ((3, 5), torch.float32), ((1,), torch.float32)):
        got = ops.uniform(shape, 12345, 7, dtype=dtype, device=dev)
        chk.equal(f"uniform {shape} {dtype}", got, reference.uniform(shape, 12345, 7, dtype=dtype))
    # row streams: odd lengths (a partly used last block), offsets with the top bit set
    offsets = torch.tensor([0, 5, 2**40 + 3, -7, 5], dtype=torch.int64)
    for n, dtype in (
        (7, torch.float64),
        (9, torch.float32),
        (1, torch.float32),
        (0, torch.float64),
    ):
        got = ops.uniform_rows(offsets.to(dev), n, 2**62 + 11, dtype)
        want = reference.uniform_rows(offsets, n, 2**62 + 11, dtype)
        chk.equal(f"uniform_rows n={n} {dtype}", got, want)


def masked_ce_ops(dev, chk):
    g = torch.Generator().manual_seed(1)
    for n, v, dtype in (
        (37, 33, torch.float32),
        (37, 1001, torch.bfloat16),
        (5, 4097, torch.float16),
        (9, 33, torch.float64),
    ):
        exclude = v - 1
        z = torch.randn(n, v, generator=g, dtype=torch.float64) * 3
        target = torch.randint(0, v - 1, (n,), generator=g)
        weight = torch.rand(n, generator=g) * (torch.rand(n, generator=g) > 0.3)
        ref_z = z.to(dtype).double().requires_grad_()
        ref = reference.masked_ce(ref_z, target, weight.double(), exclude)
        upstream = torch.rand(n, generator=g, dtype=torch.float64)
        (ref * upstream).sum().backward()
        for inplace in (False, True):
            leaf = z.to(dtype).to(dev).requires_grad_()
            zz = leaf * 1 if inplace else leaf  # in-place backward needs a non-leaf buffer
            loss = ops.masked_ce(
                zz, target.to(dev), weight.to(dev), exclude, inplace_backward=inplace
            )
            (loss * upstream.to(dev, loss.dtype)).sum().backward()
            tag = f"masked_ce N={n} V={v} {dtype} inplace={inplace}"
            chk.close(tag + " loss", loss, ref, _tol(dtype), _tol(dtype))
            chk.close(tag + " grad", leaf.grad, ref_z.grad, _tol(dtype), _tol(dtype))


def linear_masked_ce_ops(dev, chk):
    g = torch.Generator().manual_seed(2)
    n, d, v = 53, 24, 1001
    for dtype, chunk in ((torch.float32, 8), (torch.bfloat16, 16), (torch.float32, None)):
        hidden = torch.randn(n, d, generator=g, dtype=torch.float64)
        weight = torch.randn(v, d, generator=g, dtype=torch.float64) / d**0.5
        bias = torch.randn(v, generator=g, dtype=torch.float64) * 0.1
        target = torch.randint(0, v - 1, (n,), generator=g)
        row_w = torch.rand(n, generator=g) * (torch.rand(n, generator=g) > 0.4)
        refs = [t.to(dtype).double().requires_grad_() for t in (hidden, weight, bias)]
        reference.linear_masked_ce(*refs, target, row_w.double(), v - 1).sum().backward()
        leaves = [t.to(dtype).to(dev).requires_grad_() for t in (hidden, weight, bias)]
        loss = ops.linear_masked_ce(*leaves, target.to(dev), row_w.to(dev), v - 1, chunk_rows=chunk)
        loss.sum().backward()
        tol = 1e-3 if dtype == torch.float32 else 5e-2
        tag = f"linear_masked_ce {dtype} chunk={chunk}"
        for name, leaf, ref in zip(("hidden", "weight", "bias"), leaves, refs, strict=True):
            chk.close(f"{tag} grad_{name}", leaf.grad, ref.grad, tol, tol)


def sample_x0_ops(dev, chk, cpu_kernels):
    g = torch.Generator().manual_seed(3)
    settings = [
        {},
        {"temperature": 0.7, "top_k": 5},
        {"top_p": 0.9},
        {"top_p": 0.8, "nucleus": "hf", "top_k": 40},
        {"temperature": 0.0},
    ]
    for v in (33, 4097):
        logits = torch.randn(13, v, generator=g) * 3
        rows = torch.tensor([0, 4, 5, 12])
        for kw in settings:
            for sel in (None, rows):
                args = dict(kw, exclude_index=v - 1, seed=11, offset=3)
                tok, prob = ops.sample_x0(
                    logits.to(dev), None if sel is None else sel.to(dev), **args
                )
                ref_kw = {k: v for k, v in args.items()}
                rtok, rprob = reference.sample_x0(logits, sel, **ref_kw)
                tag = f"sample_x0 V={v} {kw} rows={'all' if sel is None else 'subset'}"
                chk.equal(tag + " tokens", tok, rtok)
                chk.close(tag + " prob", prob, rprob, 1e-4, 1e-6)
                if cpu_kernels:
                    ctok, _ = ops.sample_x0(logits, sel, **args)
                    chk.equal(tag + " tokens CPU == device", tok, ctok)


def mask_step_ops(dev, chk, cpu_kernels):
    g = torch.Generator().manual_seed(4)
    B, L, V = 3, 37, 1001
    mask = V - 1
    x = torch.where(
        torch.rand(B, L, generator=g) < 0.6, mask, torch.randint(0, V - 1, (B, L), generator=g)
    )
    logits = torch.randn(B, L, V, generator=g) * 2
    conf = torch.randn(B, L, generator=g)
    remask = torch.rand(B, L, generator=g, dtype=torch.float64) * 0.1
    a_t = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64)
    a_s = torch.tensor([0.6, 0.5, 1.0], dtype=torch.float64)
    cases = [
        ("plain", {}, logits),
        ("remask+conf", {"remask": remask, "confidence": conf}, logits),
        ("remask scalar, top-p", {"remask": 0.05, "top_p": 0.9}, logits),
        ("top-k, T=0.8", {"top_k": 7, "temperature": 0.8}, logits),
        ("no logits", {}, None),
    ]
    for name, kw, lg in cases:
        dev_kw = {k: (t.to(dev) if torch.is_tensor(t) else t) for k, t in kw.items()}
        got = ops.mask_step(
            x.to(dev), None if lg is None else lg.to(dev), mask_index=mask,
            alpha_t=a_t.to(dev), alpha_s=a_s.to(dev), seed=5, offset=9, **dev_kw,
        )  # fmt: skip
        ref_kw = dict(kw)
        if not torch.is_tensor(ref_kw.get("remask", None)) and "remask" in ref_kw:
            ref_kw["remask"] = torch.full((B, L), ref_kw["remask"], dtype=torch.float64)
        want = reference.mask_step(x, lg, a_t, a_s, mask_index=mask, seed=5, offset=9, **ref_kw)
        for part, a, b in zip(("x", "changed", "confidence"), got, want, strict=True):
            chk.equal(f"mask_step {name} {part}", a, b)
        if cpu_kernels:
            cpu = ops.mask_step(
                x, lg, mask_index=mask, alpha_t=a_t, alpha_s=a_s, seed=5, offset=9, **kw
            )
            chk.equal(f"mask_step {name} CPU == device", got[0], cpu[0])


def prime_ops(dev, chk, cpu_kernels):
    from mdfast import digits as codec

    g = torch.Generator().manual_seed(5)
    for c, ell in ((256, 2), (1000, 3)):
        base = codec.prime_base(c, ell)
        n = 29
        x = torch.randint(0, c, (n,), generator=g)
        digits = codec.encode(x, c, ell)
        digits = torch.where(torch.rand(n, ell, generator=g) < 0.5, base, digits)
        logits = torch.randn(n, c, generator=g, dtype=torch.float64)
        for mode in ("joint", "elbo"):
            ref_z = logits.clone().requires_grad_()
            ref = reference.prime_ce(ref_z, x, digits, base, mode)
            ref.sum().backward()
            leaf = logits.float().to(dev).requires_grad_()
            loss = ops.prime_ce(leaf, x.to(dev), digits.to(dev), base=base, mode=mode)
            loss.sum().backward()
            tag = f"prime_ce C={c} l={ell} {mode}"
            chk.close(tag + " loss", loss, ref, 1e-4, 1e-4)
            chk.close(tag + " grad", leaf.grad, ref_z.grad, 1e-4, 1e-5)
        fixed = torch.tensor([0])
        for mode in ("exact", "marginal"):
            for a_s, fx in ((0.7, None), (1.0, fixed)):
                kw = {
                    "base": base,
                    "alpha_t": 0.4,
                    "alpha_s": a_s,
                    "mode": mode,
                    "seed": 3,
                    "offset": 1,
                }
                got = ops.prime_sample_step(
                    logits.float().to(dev), digits.to(dev),
                    fixed_digits=None if fx is None else fx.to(dev), **kw,
                )  # fmt: skip
                want = reference.prime_sample_step(
                    logits.float(), digits, base, 0.4, a_s, 1.0, mode, fx, seed=3, offset=1
                )
                tag = f"prime_sample_step C={c} l={ell} {mode} alpha_s={a_s}"
                chk.equal(tag, got, want)
                if cpu_kernels:
                    cpu = ops.prime_sample_step(logits.float(), digits, fixed_digits=fx, **kw)
                    chk.equal(tag + " CPU == device", got, cpu)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    dev = torch.device(args.device)
    if not _extension.has_kernel(dev):
        print(
            f"cuda_ops_smoke: no compiled {dev.type} kernels in this build: {_extension.LOAD_ERROR}"
        )
        return 2
    cpu_kernels = dev.type != "cpu" and _extension.has_kernel(torch.device("cpu"))
    chk = Checks()
    recorder = OpRecorder()
    groups = [
        ("rng", lambda: rng_ops(dev, chk)),
        ("masked_ce", lambda: masked_ce_ops(dev, chk)),
        ("linear_masked_ce", lambda: linear_masked_ce_ops(dev, chk)),
        ("sample_x0", lambda: sample_x0_ops(dev, chk, cpu_kernels)),
        ("mask_step", lambda: mask_step_ops(dev, chk, cpu_kernels)),
        ("prime", lambda: prime_ops(dev, chk, cpu_kernels)),
    ]
    with recorder:
        for name, run in groups:
            try:
                run()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
            except Exception:
                chk.failures.append(f"{name} raised:\n{traceback.format_exc()}")
    missing = sorted(registered_ops() - recorder.seen)
    for failure in chk.failures:
        print(f"FAIL {failure}")
    if missing:
        print(f"FAIL ops never called (add them to this script): {', '.join(missing)}")
    ok = not chk.failures and not missing
    called = ", ".join(sorted(recorder.seen))
    print(
        f"cuda_ops_smoke on {dev}: {len(recorder.seen)} ops called ({called}), "
        f"{chk.count} checks, {len(chk.failures)} failed: {'OK' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
