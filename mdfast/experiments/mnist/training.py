"""Training one binarized-MNIST experiment with :func:`mdfast.train.train` (the one trainer of
every experiment), exporting the model in the seed's checkpoint names."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from mdfast.experiments.mnist.checkpoint import save_checkpoint
from mdfast.experiments.mnist.data import training_data
from mdfast.experiments.mnist.device import pick_device
from mdfast.experiments.mnist.model import build_model
from mdfast.experiments.mnist.objectives import make_objective
from mdfast.experiments.mnist.presets import check_experiment

__all__ = ["train_experiment"]


def train_experiment(
    experiment: str,
    *,
    n_epochs: int = 10,
    output_folder: str = "outputs",
    device: str | None = None,
    masked_fraction: float = 0.9,
    consistency_weight: float = 1.0,
    ambient_options: dict | None = None,
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
    ``ambient_options``: more arguments of
    :class:`~mdfast.experiments.mnist.objectives.AmbientMDLM` (``role``, ``inner_steps``,
    ``divergence``, …; ambient only), recorded in the checkpoints.
    Returns ``{"model", "final", "checkpoints", "seconds", "steps", "images_per_s"}``.
    """
    from mdfast.train import TrainConfig, train

    check_experiment(experiment)
    dev = pick_device(device)
    dataset = training_data(experiment, masked_fraction=masked_fraction, data=data, seed=seed)
    steps_per_epoch = math.ceil(len(dataset[0]) / batch_size)
    total = n_epochs * steps_per_epoch if max_steps is None else int(max_steps)
    torch.manual_seed(seed)
    model = build_model(model_preset)
    options = dict(ambient_options or {}) if experiment == "ambient" else {}
    if ambient_options and experiment != "ambient":
        raise ValueError(
            f"mdfast: argument 'ambient_options' is for the ambient experiment, not {experiment!r}"
        )
    objective = make_objective(
        experiment,
        model,
        masked_fraction=masked_fraction,
        consistency_weight=consistency_weight,
        **options,
    ).to(dev)
    out = Path(output_folder)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "masked_fraction": masked_fraction if experiment != "baseline" else 0.0,
        "consistency_weight": consistency_weight if experiment == "ambient" else 0.0,
        "ambient_options": options,
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
