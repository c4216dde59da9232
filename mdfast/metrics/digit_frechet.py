"""Deprecated alias of :mod:`mdfast.experiments.mnist.frechet`.

The digit Fréchet score belongs to its experiment; the generic packages import nothing of an
experiment."""

from mdfast._deprecation import alias_module

alias_module(__name__, "mdfast.experiments.mnist.frechet")
