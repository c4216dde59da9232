"""Evaluation metrics of general use: exact-ELBO bits per token (:mod:`~mdfast.metrics.elbo`),
Fréchet distance between feature sets (:mod:`~mdfast.metrics.frechet`).

Experiment-specific metrics live with their experiment (the digit Fréchet score:
:mod:`mdfast.experiments.mnist.frechet`; ``mdfast.metrics.digit_frechet`` is its deprecated
alias, loaded only when asked for)."""

import importlib

from mdfast.metrics import elbo as elbo
from mdfast.metrics import frechet as frechet

_DEPRECATED_SUBMODULES = {"digit_frechet"}


def __getattr__(name: str):
    if name in _DEPRECATED_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
