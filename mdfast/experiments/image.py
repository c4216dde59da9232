"""Image presets of the built-in objectives. The discrete-interpolant presets (ImageNet / COCO
VQ-f8 tokens, the CPU-scale digits, the tiny synthetic grid) live with their experiment,
:mod:`mdfast.experiments.interpolants.presets`; the MDM-Prime ADM UNet presets come with the
Prime objective (``model.name=unet``, see ``UNET_PRESETS``)."""

from __future__ import annotations

PRESETS: dict[str, dict] = {}
