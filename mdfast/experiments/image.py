"""Image presets (MDM-Prime ADM UNet, discrete-interpolant U-ViT): added with those backbones."""

from __future__ import annotations

PRESETS: dict[str, dict] = {}
