"""Deprecated alias of :mod:`mdfast.experiments.mnist.frechet`.

The digit Fréchet score belongs to its experiment; the generic packages import nothing of an
experiment."""

import warnings

from mdfast.experiments.mnist.frechet import *  # noqa: F403
from mdfast.experiments.mnist.frechet import __all__ as __all__

warnings.warn(
    "mdfast: mdfast.metrics.digit_frechet is deprecated; import mdfast.experiments.mnist.frechet",
    DeprecationWarning,
    stacklevel=2,
)
