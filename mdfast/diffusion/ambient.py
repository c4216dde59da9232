"""Deprecated alias of :mod:`mdfast.experiments.mnist.objectives`.

The MNIST objectives belongs to its experiment; the generic packages import nothing of an
experiment."""

from mdfast._deprecation import alias_module

alias_module(__name__, "mdfast.experiments.mnist.objectives")
