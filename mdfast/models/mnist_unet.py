"""Deprecated alias of :mod:`mdfast.experiments.mnist.model`.

The MNIST denoiser belongs to its experiment; the generic packages import nothing of an
experiment."""

import warnings

from mdfast.experiments.mnist.model import *  # noqa: F403
from mdfast.experiments.mnist.model import __all__ as __all__

warnings.warn(
    "mdfast: mdfast.models.mnist_unet is deprecated; import mdfast.experiments.mnist.model",
    DeprecationWarning,
    stacklevel=2,
)
