"""Diffusion objectives as modules: ``loss(batch) -> (loss, metrics)``."""

from mdfast.diffusion import ambient as ambient
