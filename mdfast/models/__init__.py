"""Backbones: MDLM's DiT (checkpoint compatible), a causal transformer for the AR baseline, the ADM
UNet of the MDM-Prime image experiments and a class-conditional U-ViT."""

from mdfast.models.dit import DIT_PRESETS, DiT, DiTConfig, load_mdlm, load_state_dict_checked

__all__ = ["DIT_PRESETS", "DiT", "DiTConfig", "load_mdlm", "load_state_dict_checked"]
