"""U-ViT over token grids (the discrete-interpolants backbone, ``models/discrete_uvit.py``).

Token embedding → p×p patch conv → patches, with extra tokens in front: a time token (only when
``time_cond``), then either a class token (``num_classes > 0``; id ``num_classes`` is the null
class used for classifier-free guidance) or ``context_len`` text tokens (``context_dim > 0``: e.g.
COCO's 77 CLIP tokens of width 768, projected to d; the null context is the buffer
``null_context``, zeros or the ``.npy`` at ``null_context_path``, e.g. the seed's
``clip_empty_context.npy``). Body: ``depth // 2`` in-blocks, a mid block and ``depth // 2``
out-blocks, each out-block fed ``Linear([x, skip])`` from the mirrored in-block (long skips).
Head: LayerNorm → Linear to p²·(d/8) channels per patch → unpatchify → zero-initialised 3×3 conv
to ``vocab_size`` logits per grid cell.

``forward(x [B, H, W] ids, y=None, t=None, context=None) -> logits [B, H, W, vocab_size]``
(contiguous); ``null_condition(cond)`` the null version of a condition ``{"y": ...}`` /
``{"context": ...}``; ``forward_with_cfg(x, y, scale) = z_u + scale·(z_c − z_u)``
(:func:`mdfast.sampling.guidance.guided_logits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mdfast.models.config import configure
from mdfast.models.dropout import KeyedDropout, name_dropout_streams
from mdfast.models.embeddings import sinusoidal_embedding

__all__ = ["UVIT_PRESETS", "UViT", "UViTConfig"]


@dataclass
class UViTConfig:
    vocab_size: int = 16385  # VQ-f8 codes + mask
    image_size: int = 32  # latent grid side
    patch_size: int = 2
    dim: int = 1152
    depth: int = 28
    heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # 0 = unconditional; id num_classes = null class
    time_cond: bool = False  # "_it" models: no time token
    dropout: float = 0.0
    context_dim: int = 0  # > 0: text-conditioned on [B, context_len, context_dim] tokens
    context_len: int = 77
    null_context_path: str = ""  # .npy [context_len, context_dim]; "" = zeros


UVIT_PRESETS: dict[str, UViTConfig] = {
    "uvit_h2_it": UViTConfig(dim=1152, depth=28, heads=16),
    "uvit_s2deep_it": UViTConfig(dim=512, depth=16, heads=8, num_classes=0, context_dim=768),
    "tiny": UViTConfig(vocab_size=9, image_size=8, dim=64, depth=4, heads=4, num_classes=4),
}


class _Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, dropout, skip=False):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), KeyedDropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x, skip=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    def __init__(self, config: UViTConfig | str | None = None, **overrides):
        super().__init__()
        cfg = configure(UViTConfig, config, UVIT_PRESETS, overrides, "U-ViT")
        if cfg.image_size % cfg.patch_size:
            raise ValueError("mdfast: 'image_size' must be divisible by 'patch_size'")
        if cfg.num_classes > 0 and cfg.context_dim > 0:
            raise ValueError("mdfast: a U-ViT takes 'num_classes' or 'context_dim', not both")
        self.config = cfg
        d, p = cfg.dim, cfg.patch_size
        self.token_embed = nn.Embedding(cfg.vocab_size, d)
        self.patch_embed = nn.Conv2d(d, d, p, stride=p)
        n_cond = 1 if cfg.num_classes > 0 else (cfg.context_len if cfg.context_dim > 0 else 0)
        self.extras = int(cfg.time_cond) + n_cond
        if cfg.time_cond:
            self.time_embed = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        if cfg.num_classes > 0:
            self.label_emb = nn.Embedding(cfg.num_classes + 1, d)  # + null class
        if cfg.context_dim > 0:
            self.context_embed = nn.Linear(cfg.context_dim, d)
            self.register_buffer("null_context", _null_context(cfg))
        n_patches = (cfg.image_size // p) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + n_patches, d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        half = cfg.depth // 2
        self.in_blocks = nn.ModuleList(
            _Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(half)
        )
        self.mid_block = _Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout)
        self.out_blocks = nn.ModuleList(
            _Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout, skip=True) for _ in range(half)
        )
        self.norm = nn.LayerNorm(d)
        self.mid_ch = max(1, d // 8)
        self.decoder_pred = nn.Linear(d, p * p * self.mid_ch)
        self.final_layer = nn.Conv2d(self.mid_ch, cfg.vocab_size, 3, padding=1)
        nn.init.zeros_(self.final_layer.weight)
        nn.init.zeros_(self.final_layer.bias)
        name_dropout_streams(self)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def null_condition(self, cond: dict) -> dict:
        """The null version of ``cond`` (``{"y": labels [B]}`` or ``{"context": [B, T, C]}``):
        the null class / ``null_context`` for every sample. A ValueError if this model has no
        null condition (unconditional: ``num_classes = 0`` and ``context_dim = 0``)."""
        cfg = self.config
        out = {}
        for key, value in cond.items():
            if key == "y" and cfg.num_classes > 0:
                out["y"] = torch.full_like(value, self.null_class)
            elif key == "context" and cfg.context_dim > 0:
                out["context"] = self.null_context.to(value.dtype).expand_as(value)
            else:
                raise ValueError(
                    f"mdfast: classifier-free guidance ('cfg_scale' != 1) needs a null "
                    f"condition for '{key}', and this U-ViT has none "
                    f"(num_classes={cfg.num_classes}, context_dim={cfg.context_dim})"
                )
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                t: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        cfg = self.config
        b, hh, ww = x.shape
        h = self.token_embed(x).permute(0, 3, 1, 2)  # [B, d, H, W]
        h = self.patch_embed(h).flatten(2).transpose(1, 2)  # [B, N, d]
        extra = []
        if cfg.time_cond:
            t = torch.zeros(b, device=x.device) if t is None else t.reshape(-1).expand(b)
            emb = sinusoidal_embedding(t, cfg.dim).to(self.time_embed[0].weight.dtype)
            extra.append(self.time_embed(emb)[:, None])
        if cfg.num_classes > 0:
            if y is None:
                y = torch.full((b,), self.null_class, device=x.device, dtype=torch.long)
            extra.append(self.label_emb(y)[:, None])
        if cfg.context_dim > 0:
            if context is None:
                context = self.null_context.expand(b, -1, -1)
            if context.shape[1:] != (cfg.context_len, cfg.context_dim):
                raise ValueError(
                    f"mdfast: argument 'context' must be [B, {cfg.context_len}, "
                    f"{cfg.context_dim}], got {list(context.shape)}"
                )
            extra.append(self.context_embed(context.to(self.context_embed.weight.dtype)))
        h = torch.cat([*extra, h], dim=1) + self.pos_embed
        skips = []
        for blk in self.in_blocks:
            h = blk(h)
            skips.append(h)
        h = self.mid_block(h)
        for blk in self.out_blocks:
            h = blk(h, skips.pop())
        h = self.decoder_pred(self.norm(h))[:, self.extras :]  # [B, N, p²·c]
        p, gh, gw = cfg.patch_size, hh // cfg.patch_size, ww // cfg.patch_size
        h = h.reshape(b, gh, gw, p, p, self.mid_ch).permute(0, 5, 1, 3, 2, 4)
        h = h.reshape(b, self.mid_ch, hh, ww).contiguous(memory_format=torch.channels_last)
        # channels-last conv output: the [B, H, W, V] permute is contiguous (no copy)
        return self.final_layer(h).permute(0, 2, 3, 1).contiguous()  # [B, H, W, V]

    def forward_with_cfg(self, x, y, scale: float, t=None) -> torch.Tensor:
        """Classifier-free guidance: z_u + scale·(z_c − z_u), z_u with the null class, in one
        batched forward (:func:`mdfast.sampling.guidance.guided_logits`)."""
        from mdfast.sampling.guidance import guided_logits

        return guided_logits(self, x, {"y": y}, scale, t=t)


def _null_context(cfg: UViTConfig) -> torch.Tensor:
    shape = (cfg.context_len, cfg.context_dim)
    if not cfg.null_context_path:
        return torch.zeros(shape)
    path = Path(cfg.null_context_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"mdfast: model.null_context_path '{path}' not found (a .npy of the null text's "
            f"embedding, shape {list(shape)}, e.g. the seed's data/clip_empty_context.npy)"
        )
    arr = torch.from_numpy(np.load(path)).float().reshape(-1, cfg.context_dim)
    if tuple(arr.shape) != shape:
        raise ValueError(
            f"mdfast: model.null_context_path '{path}' holds shape {list(arr.shape)}, expected "
            f"{list(shape)}"
        )
    return arr
