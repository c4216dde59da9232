"""Deprecated alias of :mod:`mdfast.experiments.mnist.data`.

The binarized-MNIST loader belongs to its experiment; the generic packages import nothing of an
experiment."""

from mdfast._deprecation import alias_module

alias_module(__name__, "mdfast.experiments.mnist.data")
