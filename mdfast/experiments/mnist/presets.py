"""The experiments of binarized MNIST and their presets for the ``mdfast`` command.

``EXPERIMENTS``: ``baseline`` (MDLM on clean digits), ``naive`` (MDLM on corrupted digits, the
unobserved pixels taken as masked) and ``ambient`` (easy + consistency losses on corrupted
digits). ``PRESETS``: ``mdfast train|eval mnist-*`` (registered by
:func:`mdfast.experiments.mnist.registration.register`).
"""

from __future__ import annotations

__all__ = ["EXPERIMENTS", "PRESETS", "check_experiment"]

EXPERIMENTS = ("baseline", "naive", "ambient")


def check_experiment(experiment: str) -> None:
    if experiment not in EXPERIMENTS:
        raise ValueError(
            f"mdfast: unknown experiment {experiment!r}; valid: {', '.join(EXPERIMENTS)}"
        )


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
