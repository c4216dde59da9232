"""Forward processes and losses of masked discrete diffusion models, as modules:
``objective(batch) -> (loss, metrics)`` (see ``mdfast.diffusion.base``).

Generic: nothing here imports an experiment. The binarized-MNIST objectives live in
:mod:`mdfast.experiments.mnist.objectives` (``mdfast.diffusion.ambient`` is a deprecated alias,
loaded only when asked for)."""

import importlib

from mdfast.diffusion.ar import AR
from mdfast.diffusion.base import Objective, sample_t
from mdfast.diffusion.imdm import (
    IMDM,
    IMDMBackbone,
    imdm_posterior,
    imdm_update,
    redraw_probability,
    seeded_eps,
)
from mdfast.diffusion.interpolants import Interpolant, dkappa, kappa
from mdfast.diffusion.mdlm import MDLM
from mdfast.diffusion.prime import Prime
from mdfast.diffusion.sedd import SEDD

__all__ = [
    "AR",
    "IMDM",
    "MDLM",
    "SEDD",
    "IMDMBackbone",
    "Interpolant",
    "Objective",
    "Prime",
    "dkappa",
    "imdm_posterior",
    "imdm_update",
    "kappa",
    "redraw_probability",
    "sample_t",
    "seeded_eps",
]

_DEPRECATED_SUBMODULES = {"ambient"}


def __getattr__(name: str):
    if name in _DEPRECATED_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
