"""The MNIST experiments' checkpoint format (``mdfast-mnist-v1``).

Checkpoints are named as in the seed README: ``{experiment}_mnist_epoch{N}.pth`` every
``save_every`` epochs and ``{experiment}_mnist_final.pth``. Each holds the model's config and
weights and the experiment that produced it, so loading one into another experiment fails with a
message naming the mismatch. (The ``mdfast train`` presets write the trainer's own checkpoints
instead, see :mod:`mdfast.train.checkpoint`.)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mdfast.experiments.mnist.model import MNISTUNet
from mdfast.experiments.mnist.presets import check_experiment

__all__ = ["FORMAT", "CheckpointMismatchError", "load_checkpoint", "save_checkpoint"]

FORMAT = "mdfast-mnist-v1"


class CheckpointMismatchError(ValueError):
    pass


def save_checkpoint(path, model: MNISTUNet, *, experiment: str, **meta) -> Path:
    """Write ``{format, experiment, model_config, state_dict, **meta}`` atomically."""
    check_experiment(experiment)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
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
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        what = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise CheckpointMismatchError(
            f"mdfast: {path} is not a binarized-MNIST checkpoint of mdfast (format "
            f"{state.get('format') if isinstance(state, dict) else None!r}, keys {what}); "
            f"expected format {FORMAT!r} as written by train_baseline.py / train_ambient.py"
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
