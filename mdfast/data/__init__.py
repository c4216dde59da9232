"""Dataset loaders of general use (real on-disk formats, never a download).

An experiment's own data (e.g. binarized MNIST) lives in its package under
:mod:`mdfast.experiments`; ``mdfast.data.mnist`` is a deprecated alias of
:mod:`mdfast.experiments.mnist.data`, loaded only when asked for.
"""

import importlib

_DEPRECATED_SUBMODULES = {"mnist"}


def __getattr__(name: str):
    if name in _DEPRECATED_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
