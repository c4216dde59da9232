"""``make demo``: train a small MDLM on the shipped binarized digits, sample a grid with mdfast's
kernels, and print what it measured.

    python -m mdfast.experiments.mnist.demo [--steps N] [--device cpu|cuda] [--output_folder DIR]

(``python -m mdfast.experiments.mnist_demo`` is the same.)

Prints: the build (kernels), training throughput, ELBO bits/pixel on the 500 held-out digits,
the digit Fréchet score and classifier confidence of the samples, the sampling time of mdfast's
sampler vs the seed-style reference sampler on the same model, and the path of ``samples.png``.
About 3–4 minutes on a 2-core CPU with the defaults; on a GPU it uses the GPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import mdfast
from mdfast.experiments.mnist import frechet
from mdfast.experiments.mnist.device import pick_device
from mdfast.experiments.mnist.evaluation import evaluate
from mdfast.experiments.mnist.grid import save_grid
from mdfast.experiments.mnist.sampling import sample
from mdfast.experiments.mnist.training import train_experiment


def _time(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def run(
    *,
    steps: int = 1500,
    output_folder: str = "runs/demo",
    device: str | None = None,
    num_samples: int = 256,
    grid_samples: int = 64,
    timing_samples: int = 64,
    sampling_steps: int = 40,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    dev = pick_device(device)
    info = mdfast.build_info()
    print(
        f"mdfast {info['version']} | torch {info['torch']} | kernels: "
        f"{', '.join(info['backends']) or 'none (reference fallback)'} | device: {dev}",
        flush=True,
    )
    out = Path(output_folder)
    cache = frechet.classifier_cache_path()
    if not cache.is_file():
        print(
            f"training the digit classifier for the Fréchet score (cached at {cache})", flush=True
        )
    _, clf_seconds = _time(frechet.load_classifier)

    print(f"training the baseline MDLM on the shipped digits: {steps} steps", flush=True)
    result = train_experiment(
        "baseline",
        max_steps=steps,
        save_every=0,
        output_folder=str(out),
        device=str(dev),
        model_preset="demo",
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    model = result["model"]

    grid, mdfast_seconds = _time(
        lambda: sample(model, timing_samples, steps=sampling_steps, seed=seed, device=str(dev))
    )
    _, reference_seconds = _time(
        lambda: sample(
            model,
            timing_samples,
            steps=sampling_steps,
            seed=seed,
            device=str(dev),
            sampler="reference",
        )
    )
    if grid_samples > timing_samples:
        grid = sample(model, grid_samples, steps=sampling_steps, seed=seed + 1, device=str(dev))
    png = save_grid(grid[:grid_samples], out / "samples.png", nrow=8)

    metrics = evaluate(
        model, num_samples=num_samples, steps=sampling_steps, device=str(dev), seed=seed
    )
    summary = {
        "device": str(dev),
        "train_steps": result["steps"],
        "train_seconds": result["seconds"],
        "train_images_per_s": result["images_per_s"],
        "train_pixels_per_s": result["images_per_s"] * 784,
        **metrics,
        "sampling_steps": sampling_steps,
        "sampling_images": timing_samples,
        "sample_seconds_mdfast": mdfast_seconds,
        "sample_seconds_reference": reference_seconds,
        "classifier_seconds": clf_seconds,
        "samples_png": str(png.resolve()),
        "checkpoint": str(Path(result["final"]).resolve()),
    }
    print(
        "\n".join(
            [
                "",
                "=== mdfast demo: binarized-MNIST MDLM ===",
                f"training      : {summary['train_steps']} steps x {batch_size} digits in "
                f"{summary['train_seconds']:.1f} s = {summary['train_images_per_s']:.0f} "
                f"images/s ({summary['train_pixels_per_s'] / 1e3:.0f}k pixels/s) on {dev}",
                f"ELBO          : {summary['bits_per_pixel']:.4f} ± "
                f"{summary['bits_per_pixel_se']:.4f} bits/pixel (500 held-out digits)",
                f"Fréchet       : {summary['frechet']:.2f} (digit-classifier features, "
                f"{summary['num_samples']} samples vs held-out digits; 0 = same distribution)",
                f"classifier    : confidence {summary['confidence']:.3f}, class entropy "
                f"{summary['class_entropy_bits']:.2f} bits (max 3.32)",
                f"sampling      : {timing_samples} digits x {sampling_steps} steps: mdfast "
                f"{mdfast_seconds:.2f} s vs seed-style reference {reference_seconds:.2f} s "
                f"({reference_seconds / mdfast_seconds:.2f}x)",
                f"samples       : {summary['samples_png']}",
                f"checkpoint    : {summary['checkpoint']}",
            ]
        ),
        flush=True,
    )
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m mdfast.experiments.mnist.demo", description=__doc__)
    p.add_argument("--steps", type=int, default=1500, help="training steps (batch 64)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--output_folder", default="runs/demo")
    p.add_argument("--num_samples", type=int, default=256, help="samples for the Fréchet score")
    p.add_argument("--sampling_steps", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_progress", action="store_true")
    a = p.parse_args(argv)
    return run(
        steps=a.steps,
        output_folder=a.output_folder,
        device=a.device,
        num_samples=a.num_samples,
        sampling_steps=a.sampling_steps,
        seed=a.seed,
        progress=not a.no_progress,
    )


if __name__ == "__main__":
    main()
