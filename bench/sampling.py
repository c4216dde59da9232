"""Sampling benchmarks: the fused reverse step, the x0 draw and end-to-end generation, mdfast vs
the seed code and plain torch, in one process.

* ``step``: one reverse step of MDLM at L = 1024, V = 50258 (GPT-2 + mask), half the positions
  decoded (the state at t = 0.5 of alpha = 1 - t), with a fraction ``q`` of the masked positions
  unmasking: q = 0.5 (a coarse step) and q = 2/T (T = 1024, a fine step). CUDA: B = 16, float32;
  CPU: B = 1 (``--batches``), float32 and bfloat16.
  - ``seed_step``: the seed's ``_ddpm_caching_update`` (``mdfast.baselines``) with no cache: SUBS
    log-probs from the logits, exp, the B x L x V posterior and ReMDM's float64 exponential race.
  - ``seed_step_fp32``: the same with MDLM's float32 race.
  - ``seed_cached_step``: the float64 step with the cached p_x0 (what each cached step costs).
  - ``mdfast_step``: ``ops.mask_step`` (reads only the logits rows that unmask).
  - ``mdfast_events``: ``ops.mask_step`` with nothing unmasking: the O(B L) part alone.
  Floor: read x, write x / changed / confidence, read the unmasking rows' logits once.
* ``sample_x0``: one draw per row for all N rows (CUDA N = 16384, CPU N = 1024), V = 50258,
  float32, plain and top_p = 0.9: ``mdfast`` (``ops.sample_x0``, float64-exact) against
  ``torch_gumbel`` (float32 Gumbel-argmax), ``torch_multinomial`` (softmax + multinomial) and,
  for top-p, ``torch_top_p_multinomial`` (sort, cumsum, renormalise, multinomial). Floor: one
  read of the logits.
* ``e2e``: generation with MDLM's DiT, random weights (not time-conditioned). CUDA: MDLM-small
  (12 x 768, V = 50258) at B = 64, L = 1024, T = 1000 under bf16 autocast: the seed-style
  ``ddpm_cache`` (``baselines.seed_sample``; float32 logits and MDLM's float32 race, since
  ReMDM's float64 posterior of 64 x 1024 x 50258 does not fit), mdfast ``ddpm_cache`` (full
  logits) and ``first_hitting_head`` (the output head run only on the rows that unmask). CPU: a
  one-block 64-wide DiT with V = 256 at B = 1, T in {128, 1024, 5000}, plus ``ddpm`` and
  ``first_hitting`` with full logits. Wall time of one run after a short warm-up run, denoiser
  calls, peak memory; floor: the denoiser's matrix FLOPs at the measured peak (how much of the
  wall time the model itself needs).

Run ``python -m bench.sampling [--device cuda|cpu] [--quick] [--only step sample_x0 e2e]``; rows go
to ``bench/results/sampling.csv`` and a plot to ``bench/results/sampling.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc

import torch

from bench.common import (
    add_device_argument,
    add_output_arguments,
    ceilings,
    dit_forward_flops,
    is_cuda,
    measure,
    measure_row,
    peak_tracker,
    plot_cases,
    print_row,
    result_row,
    write_rows,
    writes_results,
)
from mdfast import baselines, ops, sampling
from mdfast.models import DiT, DiTConfig

CSV = "sampling.csv"


class FullLogits:
    """A denoiser as a plain ``model(x) -> logits`` callable (no hidden/head split), optionally
    casting the logits (``dtype``)."""

    def __init__(self, dit, dtype: torch.dtype | None = None):
        self.dit = dit
        self.dtype = dtype

    def __call__(self, x):
        out = self.dit(x)
        return out if self.dtype is None else out.to(self.dtype)


def e2e_model(size: str, vocab: int, length: int, device) -> DiT:
    """MDLM's DiT with random weights: ``small`` (MDLM-small, 12 blocks x 768) or ``tiny`` (one
    64-wide block, for CPU runs)."""
    if size == "small":
        config = DiTConfig(vocab_size=vocab, model_length=length, dropout=0.0)
    else:
        config = DiTConfig(
            vocab_size=vocab,
            hidden_dim=64,
            cond_dim=32,
            n_blocks=1,
            n_heads=4,
            dropout=0.0,
            model_length=length,
        )
    torch.manual_seed(0)
    model = DiT(config).to(device).eval().requires_grad_(False)
    with torch.no_grad():  # MDLM zero-initialises the output layer; random logits need weights
        torch.nn.init.normal_(model.head_weight, std=config.hidden_dim**-0.5)
    return model


# --- step --------------------------------------------------------------------------------------


def _step_inputs(B, L, V, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    mask = V - 1
    x = torch.full((B, L), mask, dtype=torch.int64, device=device)
    x[:, : L // 2] = torch.randint(0, V - 1, (B, L // 2), generator=g, device=device)  # decoded
    logits = (torch.randn(B, L, V, generator=g, device=device) * 2).to(dtype)
    return x, logits, mask


def _step_cases(B, L, V, q, dtype, device, with_seed: bool) -> dict:
    """provider -> (fn, role) for one step t = 0.5 -> s = t (1 - q) of alpha = 1 - t, in which
    each masked position unmasks with probability q."""
    x, logits, mask = _step_inputs(B, L, V, dtype, device)
    t = 0.5
    dt = q * t
    a_t, a_s = 1 - t, 1 - (t - dt)
    cases = {}
    if with_seed:
        p_cache = baselines.seed_subs_parameterization(logits.float(), x, mask).exp()
        g = torch.Generator(device=device).manual_seed(1)
        full = lambda _x: logits.float()  # noqa: E731
        cases["seed_step"] = (
            lambda: baselines.seed_ddpm_caching_update(full, x, t, dt, mask, None, True, 1.0, g),
            "baseline",
        )
        cases["seed_step_fp32"] = (
            lambda: baselines.seed_ddpm_caching_update(full, x, t, dt, mask, None, False, 1.0, g),
            "baseline",
        )
        cases["seed_cached_step"] = (
            lambda: baselines.seed_ddpm_caching_update(None, x, t, dt, mask, p_cache, True, 1.0, g),
            "baseline",
        )
    cases["mdfast_step"] = (
        lambda: ops.mask_step(
            x, logits, mask_index=mask, alpha_t=a_t, alpha_s=a_s, seed=1, offset=0
        ),
        "mdfast",
    )
    cases["mdfast_events"] = (
        lambda: ops.mask_step(
            x, logits, mask_index=mask, alpha_t=a_t, alpha_s=a_t, seed=1, offset=0
        ),
        "info",
    )
    return cases


def _step_floor_bytes(B, L, V, elem, unmasked_rows):
    # x read, x_next written (int64), changed (bool) and confidence (float32) written, one read
    # of each unmasking row's logits
    return B * L * (8 + 8 + 1 + 4) + unmasked_rows * V * elem


def bench_step(device, args, ceil) -> list[dict]:
    rows = []
    L, V, T = (256, 4097, 1024) if args.quick else (1024, 50258, 1024)
    cuda = is_cuda(device)
    batches = args.batches or ([2] if args.quick else [16] if cuda else [1])
    seed_batches = args.seed_batches if args.seed_batches is not None else batches
    dtypes = [torch.float32] if cuda else [torch.float32, torch.bfloat16]
    for B in batches:
        for dtype in dtypes:
            for q in (0.5, 2 / T):
                cases = _step_cases(B, L, V, q, dtype, device, with_seed=B in seed_batches)
                x_next, changed, _ = cases["mdfast_step"][0]()
                unmasked = int(changed.sum())
                dname = str(dtype).removeprefix("torch.")
                case = f"B={B} L={L} V={V} {dname} q={q:.4g}"
                shape = {"B": B, "L": L, "V": V, "T": T, "dtype": dname, "unmask_rate": q}
                elem = torch.empty((), dtype=dtype).element_size()
                case_rows = []
                for name, (fn, role) in cases.items():
                    heavy = name.startswith("seed")
                    rows_read = 0 if name == "mdfast_events" else unmasked
                    case_rows.append(
                        measure_row(
                            "step",
                            case,
                            name,
                            role,
                            fn,
                            device,
                            warmup=1 if heavy else args.warmup,
                            repeat=3 if heavy and not cuda else args.repeat,
                            max_seconds=60,
                            ceil=ceil,
                            nbytes=_step_floor_bytes(B, L, V, elem, rows_read),
                            unmasked_rows=rows_read,
                            **shape,
                        )
                    )
                if args.write:
                    write_rows(CSV, case_rows)
                rows += case_rows
                del cases, x_next, changed
                gc.collect()
    return rows


# --- sample_x0 ---------------------------------------------------------------------------------


def bench_sample_x0(device, args, ceil) -> list[dict]:
    cuda = is_cuda(device)
    N, V = (256, 4097) if args.quick else ((16384, 50258) if cuda else (1024, 50258))
    mask = V - 1
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(N, V, generator=g, device=device) * 2
    rows = []
    for top_p in (1.0, 0.9):
        providers = {
            "mdfast": (
                lambda top_p=top_p: ops.sample_x0(
                    logits, top_p=top_p, exclude_index=mask, seed=1, offset=0
                ),
                "mdfast",
            )
        }
        if top_p == 1.0:
            providers["torch_gumbel"] = (
                lambda: baselines.torch_gumbel_argmax(logits, mask),
                "baseline",
            )
            providers["torch_multinomial"] = (
                lambda: baselines.torch_multinomial(logits, mask),
                "baseline",
            )
        else:
            providers["torch_top_p_multinomial"] = (
                lambda top_p=top_p: baselines.torch_top_p_multinomial(logits, top_p, mask),
                "baseline",
            )
        case = f"N={N} V={V} float32 top_p={top_p}"
        shape = {"N": N, "V": V, "dtype": "float32", "top_p": top_p}
        case_rows = []
        for name, (fn, role) in providers.items():
            case_rows.append(
                measure_row(
                    "sample_x0",
                    case,
                    name,
                    role,
                    fn,
                    device,
                    warmup=args.warmup,
                    repeat=args.repeat,
                    max_seconds=30,
                    ceil=ceil,
                    nbytes=N * V * 4 + N * 12,
                    **shape,
                )
            )
        if args.write:
            write_rows(CSV, case_rows)
        rows += case_rows
    return rows


# --- end to end --------------------------------------------------------------------------------


def _generate(name, dit, B, L, T, mask, device, seed=0) -> tuple[int, int]:
    """One generation; returns (denoiser calls, sequences passed through the denoiser)."""
    kw = {"batch_size": B, "length": L, "mask_index": mask, "steps": T, "seed": seed}
    kw["device"] = device
    if name == "seed_ddpm_cache":  # float32 logits and race (MDLM's own sampling precision)
        g = torch.Generator(device=device).manual_seed(seed)
        calls = baselines.seed_sample(
            FullLogits(dit, torch.float32),
            batch_size=B,
            length=L,
            mask_index=mask,
            steps=T,
            float64=False,
            generator=g,
            device=device,
        )[1]
        return calls, calls * B
    samplers = {
        "ddpm": (sampling.ddpm, FullLogits(dit)),
        "mdfast_ddpm_cache": (sampling.ddpm_cache, FullLogits(dit)),
        "first_hitting": (sampling.first_hitting, FullLogits(dit)),
        "first_hitting_head": (sampling.first_hitting, dit),  # logits only for unmasking rows
    }
    sampler, model = samplers[name]
    result = sampler(model, **kw)
    return result.nfe, result.sequences


def _e2e_flops(config, name, L, sequences, B) -> float:
    """The denoiser's matrix FLOPs over a generation: every sequence passed through it, with the
    output head on all its rows (full logits) or, with the split head, once per position."""
    if name == "first_hitting_head":
        return sequences * dit_forward_flops(config, 1, L, head_rows=0) + B * L * 2 * (
            config.hidden_dim * config.vocab_size
        )
    return sequences * dit_forward_flops(config, 1, L)


def bench_e2e(device, args, ceil) -> list[dict]:
    cuda = is_cuda(device)
    if args.quick:
        size, B, L, V, steps = "tiny", 1, 128, 256, [32]
    elif cuda:
        size, B, L, V, steps = "small", args.e2e_batch or 64, 1024, 50258, args.e2e_steps or [1000]
    else:
        size, B, L, V = "tiny", args.e2e_batch or 1, 1024, args.e2e_vocab
        steps = args.e2e_steps or [128, 1024, 5000]
    dit = e2e_model(size, V, L, device)
    mask = V - 1
    names = ["seed_ddpm_cache", "mdfast_ddpm_cache", "first_hitting_head"]
    if not cuda:
        names += ["first_hitting", "ddpm"]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    rows = []
    with torch.no_grad(), autocast:
        x = torch.full((B, L), mask, device=device)
        call = measure(lambda: dit(x), warmup=2, repeat=5, device=device)
        for T in steps:
            case = f"{size} DiT B={B} L={L} V={V} T={T}"
            for name in names:
                if name == "ddpm" and T > 1024:
                    continue  # T denoiser calls: long and not informative
                _generate(name, dit, B, L, min(T, 8), mask, device)  # warm-up
                out = {}

                def run(name=name, T=T, out=out):
                    out["nfe"], out["sequences"] = _generate(name, dit, B, L, T, mask, device)

                gc.collect()
                with peak_tracker(device) as mem:
                    t = measure(run, warmup=0, repeat=1, device=device)
                row = result_row(
                    "e2e",
                    case,
                    name,
                    "baseline" if name.startswith("seed") else "mdfast",
                    t,
                    device,
                    peak_bytes=mem["peak"],
                    ceil=ceil,
                    flops=_e2e_flops(dit.config, name, L, out["sequences"], B),
                    model=size,
                    B=B,
                    L=L,
                    V=V,
                    T=T,
                    nfe=out["nfe"],
                    sequences=out["sequences"],
                    denoiser_call_ms=round(call.median * 1e3, 3),
                    seconds=round(t.median, 3),
                )
                print_row(row)
                if args.write:
                    write_rows(CSV, [row])
                rows.append(row)
    return rows


def plot_results(path=CSV):
    return plot_cases(path, "mdfast sampling: median ms (latest run per device)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device_argument(parser)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument(
        "--only", nargs="*", choices=["step", "sample_x0", "e2e"], help="default: all three"
    )
    parser.add_argument("--batches", type=int, nargs="*", help="B of the step (CUDA 16, CPU 1)")
    parser.add_argument(
        "--seed-batches",
        type=int,
        nargs="*",
        help="B at which the seed-style step runs too (default: all; B=8 on CPU peaks near 15 GB)",
    )
    parser.add_argument("--repeat", type=int, default=None, help="default: 10 CUDA, 5 CPU")
    parser.add_argument("--warmup", type=int, default=None, help="default: 3 CUDA, 1 CPU")
    parser.add_argument("--e2e-batch", type=int, help="B of the generation (CUDA 64, CPU 1)")
    parser.add_argument("--e2e-vocab", type=int, default=256, help="V of the CPU generation")
    parser.add_argument("--e2e-steps", type=int, nargs="*", help="T (CUDA 1000, CPU 128 1024 5000)")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    cuda = is_cuda(args.device)
    args.repeat = args.repeat or (10 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.write = writes_results(args)
    only = args.only or ["step", "sample_x0", "e2e"]
    torch.set_grad_enabled(False)
    ceil = ceilings(args.device)
    if "step" in only:
        bench_step(args.device, args, ceil)
    if "sample_x0" in only:
        bench_sample_x0(args.device, args, ceil)
    if "e2e" in only:
        bench_e2e(args.device, args, ceil)
    if args.write and not args.no_plot:
        print(f"plot: {plot_results()}")


if __name__ == "__main__":
    main()
