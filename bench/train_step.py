"""One MDLM training step with mdfast's loss against MDLM's own loss path, in one process.

MDLM-small (DiT 12 x 768, V = 50258) at B = 32, L = 1024 under bf16 autocast on CUDA; on CPU a
two-block 128-wide DiT at B = 4, L = 128 in float32 (ratios only). Random weights and tokens;
t, x_t drawn once (MDLM's antithetic t, log-linear masking) and shared by every provider. A step
is ``zero_grad(set_to_none=True)``, forward, loss (token mean), backward and an AdamW step.

Providers:
  mdlm_loss         MDLM's path: full logits, then ``baselines.mdlm_subs_loss`` (mask logit
                    -1e6, logsumexp over B x L x V, carry-over overwrite, gather)
  mdfast_subs_loss  full logits, then ``losses.subs_loss`` (fused masked CE, unmasked rows unread)
  mdfast_fused      ``MDLM(fused=True)``: the trunk, then ``ops.linear_masked_ce`` over the
                    masked rows only (logits never exist for the whole batch)

Floor: the step's matrix FLOPs (3 x the forward of :func:`bench.common.dit_forward_flops`, the
output head on the masked rows only) over the measured bf16 peak. Rows go to
bench/results/train_step.csv, the plot beside it.

    python -m bench.train_step [--device cuda|cpu] [--quick]
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
    measure_row,
    plot_cases,
    write_rows,
    writes_results,
)
from mdfast import baselines
from mdfast.diffusion.mdlm import MDLM, mask_tokens
from mdfast.models import DiT, DiTConfig

CSV = "train_step.csv"


def build(size: str, device):
    if size == "small":
        config = DiTConfig(vocab_size=50258, model_length=1024, dropout=0.0)
        B, L = 32, 1024
    elif size == "cpu":
        config = DiTConfig(vocab_size=50258, hidden_dim=128, cond_dim=32, n_blocks=2, n_heads=4,
                           dropout=0.0, model_length=128)  # fmt: skip
        B, L = 4, 128
    else:  # quick
        config = DiTConfig(vocab_size=4097, hidden_dim=64, cond_dim=32, n_blocks=1, n_heads=4,
                           dropout=0.0, model_length=64)  # fmt: skip
        B, L = 2, 64
    torch.manual_seed(0)
    model = DiT(config).to(device)
    with torch.no_grad():  # MDLM zero-initialises the output layer; random logits need weights
        torch.nn.init.normal_(model.head_weight, std=config.hidden_dim**-0.5)
    return model, config, B, L


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device_argument(parser)
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help="default: 10 CUDA, 3 CPU")
    parser.add_argument("--warmup", type=int, default=None, help="default: 3 CUDA, 1 CPU")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    device = args.device
    cuda = is_cuda(device)
    repeat = args.repeat or (10 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    size = "quick" if args.quick else ("small" if cuda else "cpu")
    model, config, B, L = build(size, device)
    mask = config.vocab_size - 1
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, mask, (B, L), generator=g).to(device)
    fused = MDLM(model, mask_index=mask, fused=True)
    unfused = MDLM(model, mask_index=mask, fused=False)
    torch.manual_seed(2)
    t = fused.sample_t(B, device)
    sigma, _ = fused.schedule.sigma(t)
    xt = mask_tokens(x0, fused.schedule.move_chance(t), mask)
    masked_rows = int((xt == mask).sum())

    def mdlm_loss():
        logits = model(xt, sigma)
        return baselines.mdlm_subs_loss(logits, x0, xt, mask, t).mean()

    providers = {
        "mdlm_loss": (mdlm_loss, "baseline"),
        "mdfast_subs_loss": (lambda: unfused.per_token(x0, xt, t, sigma).mean(), "mdfast"),
        "mdfast_fused": (lambda: fused.per_token(x0, xt, t, sigma).mean(), "mdfast"),
    }
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    dtype = "bf16-autocast" if cuda else "float32"
    case = f"DiT {config.n_blocks}x{config.hidden_dim} V={config.vocab_size} B={B} L={L} {dtype}"
    flops = 3 * dit_forward_flops(config, B, L, head_rows=masked_rows)
    ceil = ceilings(device)
    rows = []
    for name, (loss_fn, role) in providers.items():
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)

        def step(loss_fn=loss_fn, opt=opt):
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_fn()
            loss.backward()
            opt.step()

        rows.append(
            measure_row(
                "train_step",
                case,
                name,
                role,
                step,
                device,
                warmup=warmup,
                repeat=repeat,
                max_seconds=60,
                ceil=ceil,
                flops=flops,
                model=f"{config.n_blocks}x{config.hidden_dim}",
                B=B,
                L=L,
                V=config.vocab_size,
                dtype=dtype,
                masked_rows=masked_rows,
            )
        )
        del opt, step
        model.zero_grad(set_to_none=True)
        gc.collect()
    if writes_results(args):
        write_rows(CSV, rows)
        if not args.no_plot:
            png = plot_cases(CSV, "MDLM training step: median ms (latest run per device)")
            print(f"plot: {png}")


if __name__ == "__main__":
    main()
