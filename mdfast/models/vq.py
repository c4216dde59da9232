"""Images ↔ VQ indices through a VQ autoencoder loaded from LOCAL weights (never downloaded).

The discrete interpolants train on the indices of a VQ-f8 model (LDM's ``vq-f8``: 16384 codes of
dimension 4, 256² images → 32×32 indices). :class:`VQTokenizer` wraps a diffusers
:class:`~diffusers.VQModel` read from a directory holding its ``config.json`` and weights (e.g.
LDM's checkpoint converted with diffusers' conversion script, or any VQModel saved with
``save_pretrained``):

* ``encode(images [B, 3, H, W] in [−1, 1]) -> int64 [B, H/f, W/f]``: encoder, ``quant_conv``,
  nearest codebook entry;
* ``decode(indices [B, h, w]) -> [B, 3, H, W] in [−1, 1]``: codebook lookup, ``post_quant_conv``,
  decoder. An index outside ``[0, codebook_size)`` (e.g. a mask id left in a sample) raises.

Without diffusers installed, :meth:`VQTokenizer.from_pretrained` raises an ImportError saying
what to install and which files are needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["VQTokenizer"]

_NEEDS = (
    "a local diffusers VQModel directory (config.json + diffusion_pytorch_model.safetensors), "
    "e.g. LDM's vq-f8 (16384 codes, f = 8) converted to the diffusers format"
)


def _import_vqmodel():
    try:
        from diffusers import VQModel
    except ImportError as e:
        raise ImportError(
            "mdfast: VQ encode/decode needs the 'diffusers' package (pip install diffusers, or "
            f"pip install 'mdfast[vq]') and {_NEEDS}"
        ) from e
    return VQModel


class VQTokenizer:
    """A VQ autoencoder as a tokenizer of images (module docstring)."""

    def __init__(self, model):
        self.model = model.eval()
        cfg = model.config
        self.codebook_size = int(cfg.num_vq_embeddings)
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        self.embed_dim = int(cfg.vq_embed_dim or cfg.latent_channels)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, device=None, dtype: torch.dtype = torch.float32
    ) -> VQTokenizer:
        """Load the VQModel saved under ``path`` (local files only)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"mdfast: VQ model '{path}' not found: it must be {_NEEDS}")
        vq_model = _import_vqmodel()
        model = vq_model.from_pretrained(
            str(path), local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False
        )
        return cls(model.to(device or "cpu"))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """int64 indices [B, H/f, W/f] of images [B, 3, H, W] in [−1, 1]."""
        if images.dim() != 4:
            raise ValueError(f"mdfast: images must be [B, C, H, W], got {list(images.shape)}")
        x = images.to(self.device, next(self.model.parameters()).dtype)
        h = self.model.encode(x).latents
        _, _, (_, _, idx) = self.model.quantize(h)
        return idx.reshape(h.shape[0], h.shape[2], h.shape[3]).long()

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [−1, 1] of indices [B, h, w]."""
        if indices.dim() != 3:
            raise ValueError(f"mdfast: indices must be [B, h, w], got {list(indices.shape)}")
        idx = indices.to(self.device).long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.codebook_size):
            raise ValueError(
                f"mdfast: VQ indices must be in [0, codebook_size={self.codebook_size}), got "
                f"[{int(idx.min())}, {int(idx.max())}] (a mask id left in a sample?)"
            )
        b, h, w = idx.shape
        shape = (b, h, w, self.embed_dim)
        if self.model.config.lookup_from_codebook:
            out = self.model.decode(idx.reshape(b, -1), force_not_quantize=True, shape=shape)
        else:
            quant = self.model.quantize.get_codebook_entry(idx.reshape(-1), shape)
            out = self.model.decode(quant, force_not_quantize=True)
        return out.sample.clamp(-1, 1).float()
