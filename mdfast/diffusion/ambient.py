"""Deprecated alias of :mod:`mdfast.experiments.mnist.objectives`.

The MNIST objectives belongs to its experiment; the generic packages import nothing of an
experiment."""

import warnings

from mdfast.experiments.mnist.objectives import *  # noqa: F403
from mdfast.experiments.mnist.objectives import __all__ as __all__

warnings.warn(
    "mdfast: mdfast.diffusion.ambient is deprecated; import mdfast.experiments.mnist.objectives",
    DeprecationWarning,
    stacklevel=2,
)
