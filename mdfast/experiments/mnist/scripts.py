"""The seed's command lines (``examples/mnist/train_{baseline,naive,ambient}.py`` and
``sample.py`` are thin wrappers around :func:`train_main` and :func:`sample_main`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mdfast.experiments.mnist.checkpoint import load_checkpoint
from mdfast.experiments.mnist.consistency import DIVERGENCES, ROLES
from mdfast.experiments.mnist.grid import save_grid
from mdfast.experiments.mnist.model import MODEL_PRESETS
from mdfast.experiments.mnist.presets import EXPERIMENTS
from mdfast.experiments.mnist.sampling import sample
from mdfast.experiments.mnist.training import train_experiment

__all__ = ["sample_main", "train_main"]


def _train_parser(experiment: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"train_{experiment}.py",
        description=f"Train the {experiment} masked diffusion model on binarized MNIST.",
    )
    p.add_argument("--n_epochs", type=int, default=10, help="number of epochs (default 10)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--output_folder", default="outputs", help="checkpoint folder")
    if experiment == "ambient":
        p.add_argument(
            "--consistency_weight", type=float, default=1.0, help="weight of the consistency loss"
        )
        p.add_argument(
            "--inner_steps",
            type=int,
            default=4,
            help="reverse steps from the data's level t_d to the student's level s (default 4)",
        )
        p.add_argument(
            "--divergence",
            default="brier",
            choices=DIVERGENCES,
            help="teacher vs x_s-averaged student (brier, chi2) or per-sample kl (ablation)",
        )
        p.add_argument(
            "--role",
            default="student",
            choices=ROLES,
            help="student: the model at s < t_d learns (default); reversed: the previous variant",
        )
    if experiment != "baseline":
        p.add_argument(
            "--masked_fraction",
            type=float,
            default=0.9,
            help="probability that a pixel is hidden in the corrupted data, in [0, 1) "
            "(default 0.9 = 90%% masked, what the seed README describes)",
        )
    p.add_argument("--data", default="shipped", help="'shipped' or a torchvision MNIST root")
    p.add_argument("--model", default="small", choices=sorted(MODEL_PRESETS))
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    return p


def train_main(experiment: str, argv=None) -> dict:
    args = _train_parser(experiment).parse_args(argv)
    result = train_experiment(
        experiment,
        n_epochs=args.n_epochs,
        output_folder=args.output_folder,
        device=args.device,
        masked_fraction=getattr(args, "masked_fraction", 0.0),
        consistency_weight=getattr(args, "consistency_weight", 0.0),
        ambient_options=(
            {"inner_steps": args.inner_steps, "divergence": args.divergence, "role": args.role}
            if experiment == "ambient"
            else None
        ),
        data=args.data,
        model_preset=args.model,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
    print(f"saved {result['final']} ({result['images_per_s']:.0f} images/s)")
    return result


def sample_main(argv=None) -> Path:
    p = argparse.ArgumentParser(
        prog="sample.py", description="Sample binarized digits from a trained checkpoint."
    )
    p.add_argument("--checkpoint", required=True, help="a *_mnist_final.pth / *_epochN.pth")
    p.add_argument("--experiment", default=None, choices=EXPERIMENTS, help="expected experiment")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--num_samples", "-b", type=int, default=16)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="PNG path (default: next to the checkpoint)")
    args = p.parse_args(argv)
    model, meta = load_checkpoint(args.checkpoint, experiment=args.experiment)
    x = sample(model, args.num_samples, steps=args.steps, seed=args.seed, device=args.device)
    out = args.output or Path(args.checkpoint).with_name(f"{meta['experiment']}_generated.png")
    path = save_grid(x, out)
    print(f"wrote {path}")
    return path
