"""Deprecated alias of :mod:`mdfast.experiments.mnist.data`.

The binarized-MNIST loader belongs to its experiment; the generic packages import nothing of an
experiment."""

import warnings

from mdfast.experiments.mnist.data import *  # noqa: F403
from mdfast.experiments.mnist.data import __all__ as __all__

warnings.warn(
    "mdfast: mdfast.data.mnist is deprecated; import mdfast.experiments.mnist.data",
    DeprecationWarning,
    stacklevel=2,
)
