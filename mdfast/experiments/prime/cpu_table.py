"""The CPU-scale MDM-Prime result: MDM (ℓ = 1) against Prime ℓ = 2 and ℓ = 4 on 8×8 digits at
16 grey levels (:mod:`~.digits8`), one command, minutes on a CPU:

    python -m mdfast.experiments.prime.cpu_table [--out runs/prime-digits8] [--steps 600]

Every model is the ``prime-digits8-l<ℓ>`` preset: the same UNet (parameter counts differ only
by the digit table: (b + 1) × 32/ℓ), the same training steps, batch, optimiser and seed, and the
same sampler (exact joint step, ``--nfe`` calls, no temperature / corrector / warp). Columns:

* **ELBO bits/dim**: the valid ``elbo`` bound on the 300 held-out digits, K stratified times per
  digit (:meth:`~mdfast.diffusion.prime_objective.PrimeObjective.nll`, the same times for every
  model), mean ± standard error over digits, in bits per pixel of a 16-level image (4 = uniform);
  and the paired difference to ℓ = 1 over the same digits, mean ± standard error (negative: the
  Prime model is better);
* **Fréchet**: classifier-Fréchet distance (features of a small digit classifier trained on the
  training digits) between ``--samples`` samples of the fused sampler and the training digits;
  the held-out real digits' own score is printed as the floor;
* **sampling**: wall time of ``--timing-samples`` samples with the fused kernels
  (:func:`mdfast.sampling.prime.prime_sample`) and with the seed-style materialised step
  (:func:`mdfast.baselines.seed_prime_image_sample`), the same denoiser calls in both, and the
  time spent in the steps alone (total minus denoiser time). On a shared CPU the totals move with
  the machine's load; the step times are the comparison.

Writes ``table.md``, ``results.json`` and ``samples.png`` (rows ℓ = 1, 2, 4) under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch

from mdfast import experiments
from mdfast.baselines import seed_prime_image_sample
from mdfast.experiments.build import build_data, build_model, build_objective
from mdfast.experiments.prime.digits8 import LEVELS, classifier_frechet, train_classifier
from mdfast.experiments.prime.evaluation import draw_samples
from mdfast.metrics.frechet import GaussianStats
from mdfast.sampling.prime import PrimeSamplerSettings, prime_sample
from mdfast.train import TrainConfig, train

__all__ = ["main", "run"]

DIGITS = (1, 2, 4)


class _Clock:
    """Accumulates the wall time of the blocks it wraps."""

    def __init__(self):
        self.total = 0.0

    @contextlib.contextmanager
    def __call__(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.total += time.perf_counter() - t0


def _train_one(ell: int, args) -> tuple:
    over = [
        f"train.steps={args.steps}",
        f"train.out_dir={args.out}/l{ell}",
        f"train.ckpt_every={args.steps}",
        "train.progress=false",
    ]
    cfg = experiments.apply_overrides(experiments.get(f"prime-digits8-l{ell}"), over)
    torch.manual_seed(cfg["train"]["seed"])
    train_data, val = build_data(cfg["data"])
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    t0 = time.perf_counter()
    result = train(objective, train_data, TrainConfig(**cfg["train"]), full_config=cfg)
    train_s = time.perf_counter() - t0
    if result["ema"] is not None:
        result["ema"].copy_to()
    objective.eval()
    return cfg, objective, train_data, val, train_s, result["losses"]


def _timed_samplers(objective, settings: PrimeSamplerSettings, n: int) -> dict:
    """Wall times of ``n`` samples with the fused sampler and the seed-style one (same denoiser
    calls), and of their steps alone."""
    model_clock = _Clock()

    def denoiser(d, tau):
        with model_clock():
            return objective.logits(d)

    start = objective.masked_digits(n)
    t0 = time.perf_counter()
    prime_sample(denoiser, objective.process, start, settings)
    fused_total = time.perf_counter() - t0
    fused_model = model_clock.total
    model_clock.total = 0.0
    step_clock = _Clock()
    gen = torch.Generator().manual_seed(settings.seed)
    t0 = time.perf_counter()
    seed_prime_image_sample(
        denoiser,
        start,
        base=objective.process.base,
        settings=settings,
        schedule_n=objective.process.schedule_n,
        generator=gen,
        step_timer=step_clock,
    )
    seed_total = time.perf_counter() - t0
    return {
        "fused_total_s": fused_total,
        "fused_step_s": fused_total - fused_model,
        "seed_total_s": seed_total,
        "seed_step_s": step_clock.total,
    }


def run(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    classifier = train_classifier()
    rows, grids = [], []
    reference, first_bits = None, None
    for ell in DIGITS:
        _, objective, train_data, val, train_s, losses = _train_one(ell, args)
        if reference is None:
            reference = GaussianStats.of(classifier.features(train_data["input_ids"]).double())
            floor = classifier_frechet(classifier, val["input_ids"], reference)
        t0 = time.perf_counter()
        # the same keyed times and masks for every model (keyed by seed and image index)
        bits = objective.nll(val["input_ids"], num_times=args.times, seed=args.seed)
        bits = bits["bits_per_dim"].double()
        elbo_s = time.perf_counter() - t0
        first_bits = bits if first_bits is None else first_bits
        diff = bits - first_bits
        t0 = time.perf_counter()
        samples = draw_samples(
            objective, PrimeSamplerSettings(nfe=args.nfe, seed=args.seed), args.samples, 100
        )
        sample_s = time.perf_counter() - t0
        with torch.no_grad():
            timing = _timed_samplers(
                objective, PrimeSamplerSettings(nfe=args.nfe, seed=args.seed), args.timing_samples
            )
        row = {
            "digits": ell,
            "base": objective.process.base,
            "parameters": sum(p.numel() for p in objective.parameters()),
            "train_s": train_s,
            "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
            "bits_per_dim": bits.mean().item(),
            "bits_per_dim_se": bits.std().item() / len(bits) ** 0.5,
            "diff_to_l1": diff.mean().item(),
            "diff_to_l1_se": diff.std().item() / len(diff) ** 0.5,
            "elbo_s": elbo_s,
            "frechet": classifier_frechet(classifier, samples, reference),
            "sample_s": sample_s,
            **timing,
        }
        rows.append(row)
        grids.append(samples[:16])
        print(json.dumps(row), flush=True)
    total_s = time.perf_counter() - t_start
    from mdfast.data.images import save_image_grid

    grid = torch.cat(grids) * (255 // (LEVELS - 1))
    save_image_grid(grid.to(torch.uint8), out / "samples.png", nrow=16, scale=4)
    result = {
        "rows": rows,
        "real_heldout_frechet": floor,
        "total_s": total_s,
        "settings": vars(args),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "table.md").write_text(table(result))
    print(table(result))
    return result


def table(result: dict) -> str:
    s = result["settings"]
    n = s["timing_samples"]
    lines = [
        "| ℓ | base | params | ELBO bits/dim ↓ | vs ℓ = 1 (paired) | Fréchet ↓ | "
        f"sampling {n} digits, s: fused / seed-style | steps only, s: fused / seed-style |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        vs = "—" if r["digits"] == 1 else f"{r['diff_to_l1']:+.3f} ± {r['diff_to_l1_se']:.3f}"
        lines.append(
            f"| {r['digits']} | {r['base']} | {r['parameters']:,} | "
            f"{r['bits_per_dim']:.3f} ± {r['bits_per_dim_se']:.3f} | {vs} | "
            f"{r['frechet']:.2f} | {r['fused_total_s']:.1f} / {r['seed_total_s']:.1f} | "
            f"{r['fused_step_s']:.2f} / {r['seed_step_s']:.2f} "
            f"({r['seed_step_s'] / max(r['fused_step_s'], 1e-9):.0f}×) |"
        )
    lines.append("")
    lines.append(
        f"{s['steps']} training steps per model; ELBO on the 300 held-out digits with K = "
        f"{s['times']} times; Fréchet of {s['samples']} samples at nfe = {s['nfe']} against the "
        f"training digits (held-out real digits score {result['real_heldout_frechet']:.2f}); "
        f"whole run {result['total_s'] / 60:.1f} min."
    )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mdfast.experiments.prime.cpu_table", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", default="runs/prime-digits8")
    p.add_argument("--steps", type=int, default=600, help="training steps per model")
    p.add_argument("--samples", type=int, default=800, help="samples per model (Fréchet)")
    p.add_argument("--timing-samples", type=int, default=64, help="samples of the timing runs")
    p.add_argument("--nfe", type=int, default=32, help="denoiser calls per sample")
    p.add_argument("--times", type=int, default=16, help="K, ELBO time samples per digit")
    p.add_argument("--seed", type=int, default=0)
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
