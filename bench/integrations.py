"""Benchmark of :mod:`mdfast.integrations.mdlm`: an MDLM-family ``Diffusion`` before and after
``patch``, in the same process, on identical weights.

The model is the stand-in ``Diffusion`` of ``bench/mdlm_standin.py`` / ``bench/remdm_standin.py``
(MDLM's and ReMDM's method contracts) around mdfast's MDLM-compatible DiT at a small but real
configuration: GPT-2's vocabulary plus the mask (V = 50258), hidden 128, 2 blocks, 4 heads,
cond 64, no time conditioning, random weights (scaled so the logits are not flat). The vocabulary
is what makes the loss and the sampling steps cost what they cost in MDLM; the trunk is small so
that the CPU runs finish, which makes the ratios an upper estimate of what a 12-block model gains
end to end (the network itself is not changed by the patch, except the output projection).

* ``train_step``: ``_loss(x0, attention_mask).loss.backward()`` plus an AdamW step; B = 4,
  L = 128 (``--train-shape``). Original: the -1e6 SUBS log-softmax over B x L x V and its backward.
  Patched: the fused masked cross-entropy with the output projection fused in (masked rows only).
* ``sample_<sampler>``: the codebase's own ``_sample()`` loop, B = 1, L = 64, T = 64 steps
  (``--sample-shape``; T = L as in MDLM's L = T = 1024 runs): MDLM ``ddpm_cache`` and ReMDM
  ``remdm-cap`` (eta 0.008) with nucleus p = 0.9. Columns ``nfe`` (network calls in the loop,
  noise removal included) and the peak extra memory of one run.

On CPU the float32 model runs without autocast; on CUDA the DiT runs under bf16 autocast, as
MDLM's does. ``python -m bench.integrations [--quick] [--device cuda]``; rows go to
``bench/results/integrations.csv`` and a plot beside it.
"""

from __future__ import annotations

import argparse
import copy
import math
import os

import torch

from bench.common import (
    context_columns,
    measure,
    peak_memory_bytes,
    plot,
    timing_columns,
    write_rows,
)
from bench.mdlm_standin import AutocastDiT, MDLMDiffusion, mdlm_config
from bench.remdm_standin import ReMDMDiffusion, remdm_config
from mdfast.integrations import mdlm as integration
from mdfast.models import DiTConfig

CSV = "integrations.csv"
VOCAB = 50258


def _backbone(length: int, device, autocast, dim: int, blocks: int) -> AutocastDiT:
    cfg = DiTConfig(
        vocab_size=VOCAB,
        hidden_dim=dim,
        cond_dim=64,
        n_blocks=blocks,
        n_heads=4,
        dropout=0.1,
        model_length=length,
    )
    torch.manual_seed(0)
    model = AutocastDiT(cfg, autocast=autocast)
    with torch.no_grad():  # MDLM zero-initialises adaLN and the output layer: randomise them
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]))
    return model.to(device)


class _Calls:
    """Forward hook counting the backbone's calls."""

    n = 0

    def __call__(self, *_):
        self.n += 1


def _pair(make):
    """(original, patched) models with identical weights."""
    original = make()
    patched = copy.deepcopy(original)
    integration.patch(patched)
    return original, patched


def _row(case, provider, shape, timing, device, dtype, **extra) -> dict:
    return {
        "bench": "integrations",
        "case": case,
        "provider": provider,
        "role": "baseline" if provider == "original" else "mdfast",
        "shape": shape,
        "dtype": dtype,
        **timing_columns(timing),
        **extra,
        **context_columns(device),
    }


def bench_train(device, autocast, B, L, dim, blocks) -> list[dict]:
    def make():
        config = mdlm_config(length=L)
        return MDLMDiffusion(config, _backbone(L, device, autocast, dim, blocks), VOCAB).to(device)

    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, VOCAB - 1, (B, L), generator=g).to(device)
    am = torch.ones(B, L, device=device)
    shape = f"B={B} L={L} V={VOCAB} D={dim}x{blocks}"
    rows, base = [], None
    for provider, model in zip(("original", "mdfast_patch"), _pair(make), strict=True):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss = model._loss(x0, am).loss
            loss.backward()
            opt.step()
            return loss.detach()

        mem = peak_memory_bytes(step, device)  # also the warm-up (patched: validates the fusion)
        timing = measure(step, warmup=1, repeat=5, device=device)
        base = base or timing
        rows.append(
            _row(
                "train_step",
                provider,
                shape,
                timing,
                device,
                "bf16-autocast" if autocast else "float32",
                peak_mem_mb=round(mem / 2**20, 1),
                speedup=round(timing.ratio_to(base), 2),
            )
        )
        print(f"train  {shape}  {provider:13s} {timing.median * 1e3:9.1f} ms  {mem / 2**20:.1f} MB")
    return rows


def bench_sample(device, autocast, sampler, L, T, dim, blocks, repeat) -> list[dict]:
    def make():
        backbone = _backbone(L, device, autocast, dim, blocks)
        if sampler == "ddpm_cache":
            return MDLMDiffusion(mdlm_config(length=L, steps=T), backbone, VOCAB).to(device)
        config = remdm_config(length=L, steps=T, sampler=sampler, eta=0.008, nucleus_p=0.9)
        return ReMDMDiffusion(config, backbone, VOCAB).to(device)

    shape = f"B=1 L={L} T={T} V={VOCAB} D={dim}x{blocks}"
    case = "sample_" + (sampler if sampler == "ddpm_cache" else f"{sampler}_top0.9")
    rows, base = [], None
    for provider, model in zip(("original", "mdfast_patch"), _pair(make), strict=True):
        model.eval()
        calls = _Calls()
        model.backbone.register_forward_hook(calls)

        def run(model=model):
            torch.manual_seed(0)
            return model._sample()

        # the first run is the warm-up (patched: it validates the fused output layer); its peak
        # memory is the one reported
        mem = peak_memory_bytes(run, device)
        calls.n = 0
        timing = measure(run, warmup=0, repeat=repeat, device=device)
        nfe = calls.n // timing.repeat
        base = base or timing
        rows.append(
            _row(
                case,
                provider,
                shape,
                timing,
                device,
                "bf16-autocast" if autocast else "float32",
                nfe=nfe,
                peak_mem_mb=round(mem / 2**20, 1),
                speedup=round(timing.ratio_to(base), 2),
            )
        )
        print(
            f"sample {case:24s} {shape}  {provider:13s} {timing.median:8.2f} s  nfe {nfe:4d}  "
            f"{mem / 2**20:8.1f} MB"
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small shapes, no CSV (smoke run)")
    parser.add_argument("--train-shape", type=int, nargs=2, default=[4, 128], metavar=("B", "L"))
    parser.add_argument("--sample-shape", type=int, nargs=2, default=[64, 64], metavar=("L", "T"))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--sample-repeat", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-sample", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    B, L = (2, 32) if args.quick else args.train_shape
    Ls, T = (32, 16) if args.quick else args.sample_shape
    repeat = 1 if args.quick else args.sample_repeat
    rows = []
    if not args.skip_train:
        rows += bench_train(device, autocast, B, L, args.dim, args.blocks)
    if not args.skip_sample:
        for sampler in ("ddpm_cache", "remdm-cap"):
            rows += bench_sample(device, autocast, sampler, Ls, T, args.dim, args.blocks, repeat)
    if rows and (not args.quick or os.environ.get("MDFAST_BENCH_RESULTS")):
        path = write_rows(CSV, rows)
        plot(
            path,
            label_cols=["case", "shape"],
            title=f"MDLM Diffusion, original vs mdfast patch ({device.type})",
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
