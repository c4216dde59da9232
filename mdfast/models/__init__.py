"""Backbones: MDLM's DiT (checkpoint compatible), a causal transformer for the AR baseline, the ADM
UNet of the MDM-Prime image experiments and a class-conditional U-ViT; the sinusoidal time
embedding they share (:mod:`~mdfast.models.embeddings`).

Generic: nothing here imports an experiment. An experiment's own network lives in its package
(the binarized-MNIST UNet: :class:`mdfast.experiments.mnist.model.MNISTUNet`; the name
``mdfast.models.MNISTUNet`` is a deprecated alias, resolved only when asked for)."""

import importlib

from mdfast.models.dit import DIT_PRESETS, DiT, DiTConfig, load_mdlm, load_state_dict_checked
from mdfast.models.unet import UNET_PRESETS, UNet, UNetConfig
from mdfast.models.uvit import UVIT_PRESETS, UViT, UViTConfig


class CausalLM(DiT):
    """The AR baseline's backbone: MDLM's DiT blocks with causal attention (MDLM's ``AR`` model)
    and no time conditioning. ``CausalLM("small", vocab_size=50257)``."""

    def __init__(self, config=None, **overrides):
        super().__init__(config, causal=True, **overrides)


__all__ = [
    "DIT_PRESETS",
    "UNET_PRESETS",
    "UVIT_PRESETS",
    "CausalLM",
    "DiT",
    "DiTConfig",
    "UNet",
    "UNetConfig",
    "UViT",
    "UViTConfig",
    "load_mdlm",
    "load_state_dict_checked",
]


def __getattr__(name: str):
    if name == "MNISTUNet":
        return importlib.import_module("mdfast.models.mnist_unet").MNISTUNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
