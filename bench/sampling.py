"""Sampling benchmarks: the fused reverse step and end-to-end generation, mdfast vs the seed code.

* ``step``: one reverse step of MDLM / ReMDM at B in {1, 8}, L = 1024, V = 50258 (GPT-2 + mask),
  float32 / bfloat16 logits, ~1/T of the masked rows unmasking (T = 1024).
  - ``seed_step``: the seed's ``_ddpm_caching_update`` with no cache: SUBS log-probs from the
    logits, exp, the B x L x V posterior, float64 exponential race (``mdfast.baselines``).
  - ``seed_cached_step``: the same with the cached p_x0 (what every cached step costs the seed).
  - ``mdfast_step``: ``ops.mask_step`` on the logits (cached or not, it reads only the rows that
    unmask: a cached step costs O(B L) + those rows).
  - ``mdfast_events``: ``ops.mask_step`` with no row unmasking (alpha_s = alpha_t): the O(B L)
    floor.
* ``e2e``: generation of B = 1, L = 1024 with a small random-weight DiT-like denoiser (not
  time-conditioned) at T in {128, 1024, 5000}: ``ddpm``, the seed-style ``ddpm_cache``
  (``baselines.seed_sample``, float64 race), mdfast ``ddpm_cache`` and ``first_hitting`` (and
  ``first_hitting_head``: the DiT's output head run only on the rows that unmask): wall
  time, denoiser calls, peak memory. The vocabulary of the e2e runs is smaller (``--e2e-vocab``,
  default 256) so that the seed baseline's T = 5000 run fits in minutes on a CPU; the seed's
  per-step cost grows with V and the denoiser's only in its head, so a small V understates the
  speedup.

Run ``python -m bench.sampling [--quick] [--skip-e2e] [--skip-step]``; rows go to
``bench/results/sampling.csv`` and a plot to ``bench/results/sampling.png``.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from bench.common import (
    context_columns,
    measure,
    peak_memory_bytes,
    plot,
    timing_columns,
    write_rows,
)
from mdfast import baselines, ops, sampling

CSV = "sampling.csv"


class TinyDiT(torch.nn.Module):
    """DiT-like denoiser with random weights: token embedding, pre-norm attention + MLP blocks
    (no time conditioning, as MDLM on OWT), LayerNorm and a linear output head over V classes."""

    def __init__(self, vocab: int, dim: int = 64, heads: int = 4, blocks: int = 1, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(vocab, dim, generator=g) * 0.5)
        self.blocks = torch.nn.ModuleList()
        for _ in range(blocks):
            blk = torch.nn.ModuleDict(
                {
                    "n1": torch.nn.LayerNorm(dim),
                    "qkv": torch.nn.Linear(dim, 3 * dim, bias=False),
                    "out": torch.nn.Linear(dim, dim, bias=False),
                    "n2": torch.nn.LayerNorm(dim),
                    "mlp1": torch.nn.Linear(dim, 4 * dim),
                    "mlp2": torch.nn.Linear(4 * dim, dim),
                }
            )
            self.blocks.append(blk)
        self.norm = torch.nn.LayerNorm(dim)
        self.head_lin = torch.nn.Linear(dim, vocab)
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() == 2 and p is not self.emb:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        self.heads = heads
        self.requires_grad_(False)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb[x]
        B, L, D = h.shape
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["n1"](h)).view(B, L, 3, self.heads, -1).unbind(2)
            a = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            )
            h = h + blk["out"](a.transpose(1, 2).reshape(B, L, D))
            h = h + blk["mlp2"](F.gelu(blk["mlp1"](blk["n2"](h)), approximate="tanh"))
        return self.norm(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.head_lin(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))


class FullLogits:
    """The DiT as a plain ``model(x) -> logits`` callable (no hidden/head split)."""

    def __init__(self, dit):
        self.dit = dit

    def __call__(self, x):
        return self.dit(x)


def _step_inputs(B, L, V, dtype, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = V - 1
    x = torch.full((B, L), mask, dtype=torch.int64)
    x[:, : L // 2] = torch.randint(0, V - 1, (B, L // 2), generator=g)  # half decoded
    logits = (torch.randn(B, L, V, generator=g) * 2).to(dtype)
    # a step t -> s = t - 1/T at t = 0.5 of alpha = 1 - t: unmask probability (1/T) / t = 2/T
    t, dt = 0.5, 0.5 / T
    return x, logits, mask, t, dt


def _step_cases(B, L, V, T, dtype, with_seed: bool) -> dict:
    x, logits, mask, t, dt = _step_inputs(B, L, V, dtype, T)
    a_t, a_s = 1 - t, 1 - (t - dt)
    cases = {}
    if with_seed:
        p_cache = baselines.seed_subs_parameterization(logits.float(), x, mask).exp()
        g = torch.Generator().manual_seed(1)
        cases["seed_step"] = lambda: baselines.seed_ddpm_caching_update(
            lambda _x: logits.float(), x, t, dt, mask, None, True, 1.0, g
        )
        cases["seed_cached_step"] = lambda: baselines.seed_ddpm_caching_update(
            None, x, t, dt, mask, p_cache, True, 1.0, g
        )
    cases["mdfast_step"] = lambda: ops.mask_step(
        x, logits, mask_index=mask, alpha_t=a_t, alpha_s=a_s, seed=1, offset=0
    )
    cases["mdfast_events"] = lambda: ops.mask_step(
        x, logits, mask_index=mask, alpha_t=a_t, alpha_s=a_t, seed=1, offset=0
    )
    return cases


def bench_step(quick: bool, batches: list[int], seed_batches: list[int]) -> list[dict]:
    """Per-step cost. The seed-style baseline at B = 8, L = 1024, V = 50258 peaks near 15 GB
    (several B x L x V float64 temporaries), so by default it runs at B = 1 only
    (``--seed-batches 1 8`` runs it at B = 8 too); its cost and memory are linear in B L."""
    rows = []
    L, V, T = (256, 50258, 1024) if quick else (1024, 50258, 1024)
    for B in (1,) if quick else batches:
        for dtype in (torch.float32, torch.bfloat16):
            cases = _step_cases(B, L, V, T, dtype, with_seed=B in seed_batches)
            base = None
            for name, fn in cases.items():
                heavy = name.startswith("seed")
                timing = measure(fn, warmup=1, repeat=3 if heavy else 20, max_seconds=60)
                mem = peak_memory_bytes(fn)
                if name == "seed_cached_step":
                    base = timing
                row = {
                    "bench": "step",
                    "provider": name,
                    "B": B,
                    "L": L,
                    "V": V,
                    "T": T,
                    "dtype": str(dtype).removeprefix("torch."),
                    "unmask_rate": 2 / T,
                    **timing_columns(timing),
                    "peak_mem_mb": round(mem / 2**20, 1),
                    **context_columns("cpu"),
                }
                if base is not None and not heavy:
                    row["speedup_vs_seed_cached_step"] = round(timing.ratio_to(base), 1)
                rows.append(row)
                print(
                    f"step B={B} {row['dtype']:8s} {name:18s} {timing.median * 1e3:10.2f} ms  "
                    f"peak {row['peak_mem_mb']:8.1f} MB",
                    flush=True,
                )
            del cases
    return rows


def _run_e2e(name, model, dit, T, L, mask, seed=0):
    kw = {"batch_size": 1, "length": L, "mask_index": mask, "steps": T, "seed": seed}
    if name == "ddpm":
        return sampling.ddpm(model, **kw).nfe
    if name == "mdfast_ddpm_cache":
        return sampling.ddpm_cache(model, **kw).nfe
    if name == "first_hitting":
        return sampling.first_hitting(model, **kw).nfe
    if name == "first_hitting_head":  # logits only for the rows that unmask
        return sampling.first_hitting(dit, **kw).nfe
    if name == "seed_ddpm_cache":
        g = torch.Generator().manual_seed(seed)
        return baselines.seed_sample(
            model, batch_size=1, length=L, mask_index=mask, steps=T, generator=g
        )[1]
    raise ValueError(name)


def bench_e2e(quick: bool, vocab: int, steps: list[int]) -> list[dict]:
    rows = []
    L = 256 if quick else 1024
    dit = TinyDiT(vocab)
    model = FullLogits(dit)
    mask = vocab - 1
    call = measure(lambda: model(torch.full((1, L), mask)), warmup=1, repeat=5)
    print(f"denoiser call: {call.median * 1e3:.2f} ms", flush=True)
    for T in steps:
        base = None
        for name in [
            "seed_ddpm_cache",
            "mdfast_ddpm_cache",
            "first_hitting",
            "first_hitting_head",
            "ddpm",
        ]:
            if name == "ddpm" and T > 1024 and not quick:
                continue  # T calls of the denoiser: not informative, and long
            out = {}

            def run(name=name, T=T, out=out):
                t0 = time.perf_counter()
                out["nfe"] = _run_e2e(name, model, dit, T, L, mask)
                out["seconds"] = time.perf_counter() - t0

            mem = peak_memory_bytes(run)
            if name == "seed_ddpm_cache":
                base = out["seconds"]
            row = {
                "bench": "e2e",
                "provider": name,
                "B": 1,
                "L": L,
                "V": vocab,
                "T": T,
                "dtype": "float32",
                "seconds": round(out["seconds"], 3),
                "median_ms": round(out["seconds"] * 1e3, 1),
                "nfe": out["nfe"],
                "denoiser_call_ms": round(call.median * 1e3, 3),
                "peak_mem_mb": round(mem / 2**20, 1),
                **context_columns("cpu"),
            }
            if base is not None and name != "seed_ddpm_cache":
                row["speedup_vs_seed_ddpm_cache"] = round(base / out["seconds"], 2)
            rows.append(row)
            print(
                f"e2e T={T:5d} {name:20s} {out['seconds']:9.2f} s  nfe {out['nfe']:5d}  "
                f"peak {row['peak_mem_mb']:8.1f} MB",
                flush=True,
            )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--skip-step", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    parser.add_argument(
        "--seed-batches", type=int, nargs="*", default=[1], help="B of the seed step (B=8: ~15 GB)"
    )
    parser.add_argument("--e2e-vocab", type=int, default=256)
    parser.add_argument("--e2e-steps", type=int, nargs="*", default=[128, 1024, 5000])
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    rows = []
    if not args.skip_step:
        rows += bench_step(args.quick, args.batches, args.seed_batches)
    if not args.skip_e2e:
        rows += bench_e2e(args.quick, args.e2e_vocab, args.e2e_steps if not args.quick else [64])
    if rows and not args.quick:
        path = write_rows(CSV, rows)
        plot(path, label_cols=["bench", "B", "T", "dtype"], title="mdfast sampling (CPU)")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
