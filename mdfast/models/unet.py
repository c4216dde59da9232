"""The ADM UNet of the MDM-Prime image experiments (flow_matching's ``cifar10_discrete``).

Channels 96, multipliers (3, 4, 4), 5 res-blocks per level, attention at 16×16 (64-channel
heads), dropout 0.4, average-pool / nearest resampling without convs (``conv_resample=False``),
no time input (the seed's ``ignore_time=True``: no time embedding and no embedding layers in the
res-blocks; ``time_input=True`` adds them with scale-shift norm). Parameter counts match the seed
(MDM 114.0M, Prime ℓ=2 113.96M, super-token 133.8M; ``tests/test_models.py``).

Input stem: token channels → embeddings, concatenated per pixel, straight into the UNet:

- plain MDM: 3 tokens per pixel (R, G, B) over 257 ids (256 + mask), 96-d each → 288 channels;
- Prime (ℓ sub-tokens of base b): input ``[B, 3ℓ, H, W]`` with channel ``c·ℓ + j`` (digit j of
  colour c), ids in ``[0, b]`` (b = mask); one table of ``(b+1) × 96/ℓ`` shared across digits,
  the ℓ digit embeddings of a colour concatenated into 96 channels;
- super-tokens: 2 tokens per pixel over 4097 ids, 144-d each (2-channel I/O).

Output: ``[B, out_tokens, H, W, num_classes]`` logits (256 per colour for Prime and MDM with the
mask class optional, 4097 for super-tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mdfast.models.config import configure
from mdfast.models.dropout import KeyedDropout, name_dropout_streams
from mdfast.models.embeddings import sinusoidal_embedding

__all__ = ["UNET_PRESETS", "UNet", "UNetConfig"]


@dataclass
class UNetConfig:
    tokens_per_pixel: int = 3  # 3 (RGB) or 2 (super-tokens)
    digits: int = 1  # ℓ sub-tokens per token (Prime); 1 = plain MDM
    digit_vocab: int = 257  # ids per input channel incl. mask (b+1 for Prime)
    token_dim: int = 96  # embedding channels per token (split over its ℓ digits)
    num_classes: int = 257  # output logits per token
    image_size: int = 32
    model_channels: int = 96
    channel_mult: list = field(default_factory=lambda: [3, 4, 4])
    num_res_blocks: int = 5
    attention_resolutions: list = field(default_factory=lambda: [16])
    num_head_channels: int = 64
    dropout: float = 0.4
    time_input: bool = False


UNET_PRESETS: dict[str, UNetConfig] = {
    "cifar10-mdm": UNetConfig(),
    "cifar10-prime-l2": UNetConfig(digits=2, digit_vocab=17, num_classes=256),
    "cifar10-supertoken": UNetConfig(tokens_per_pixel=2, digit_vocab=4097, token_dim=144,
                                     num_classes=4097),
    "tiny": UNetConfig(digit_vocab=5, num_classes=5, image_size=8, model_channels=32, token_dim=32,
                       channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4],
                       num_head_channels=16, dropout=0.0, tokens_per_pixel=1),
}  # fmt: skip


def _norm(ch: int) -> nn.Module:
    return GroupNorm32(32 if ch % 32 == 0 else math.gcd(ch, 32), ch)


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """ADM res-block; with ``emb_ch`` (time input) the second norm is scale-shift modulated,
    without it (``ignore_time``) there are no embedding layers at all."""

    def __init__(self, ch, emb_ch, dropout, out_ch=None):
        super().__init__()
        out_ch = out_ch or ch
        self.in_layers = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        if emb_ch:
            self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch))
        self.out_layers = nn.Sequential(
            _norm(out_ch),
            nn.SiLU(),
            KeyedDropout(dropout),
            _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1)),
        )
        self.skip = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        if emb is None:
            return self.skip(x) + self.out_layers(h)
        scale, shift = self.emb_layers(emb).type(h.dtype)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[1:](h)
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, ch, head_ch):
        super().__init__()
        self.heads = max(1, ch // head_ch)
        self.norm = _norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = _zero(nn.Conv1d(ch, ch, 1))

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))  # [B, 3C, T]
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, d]
        out = out.transpose(-1, -2).reshape(b, c, h * w)
        return x + self.proj_out(out).reshape(b, c, h, w)


class _Seq(nn.ModuleList):
    def forward(self, x, emb):
        for m in self:
            x = m(x, emb) if isinstance(m, ResBlock) else m(x)
        return x


class Downsample(nn.Module):
    """2× average pooling (``conv_resample=False`` in the seed config)."""

    def forward(self, x):
        return F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """2× nearest upsampling (``conv_resample=False``)."""

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest")


class UNet(nn.Module):
    """``forward(x, sigma=None) -> logits [B, tokens_per_pixel, H, W, num_classes]``.

    ``x``: int ids ``[B, tokens_per_pixel·digits, H, W]`` (channel = token·digits + digit).
    ``sigma`` (time) is used only when ``config.time_input``; otherwise the embedding of t = 0.
    """

    def __init__(self, config: UNetConfig | str | None = None, **overrides):
        super().__init__()
        cfg = configure(UNetConfig, config, UNET_PRESETS, overrides, "UNet")
        if cfg.token_dim % cfg.digits:
            raise ValueError("mdfast: 'token_dim' must be divisible by 'digits'")
        self.config = cfg
        mc = cfg.model_channels
        emb_ch = 4 * mc if cfg.time_input else 0
        self.digit_embed = nn.Embedding(cfg.digit_vocab, cfg.token_dim // cfg.digits)
        if cfg.time_input:
            self.time_embed = nn.Sequential(
                nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch)
            )
        in_ch = cfg.tokens_per_pixel * cfg.token_dim
        attn_ds = {cfg.image_size // r for r in cfg.attention_resolutions}
        ch = int(cfg.channel_mult[0] * mc)
        # the seed feeds the embeddings straight in (input_projection=False) when widths agree
        stem = nn.Identity() if in_ch == ch else nn.Conv2d(in_ch, ch, 3, padding=1)
        self.input_blocks = nn.ModuleList([_Seq([stem])])
        chans = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_ch, cfg.dropout, int(mult * mc))]
                ch = int(mult * mc)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                self.input_blocks.append(_Seq(layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(_Seq([Downsample()]))
                chans.append(ch)
                ds *= 2
        self.middle_block = _Seq(
            [
                ResBlock(ch, emb_ch, cfg.dropout),
                AttentionBlock(ch, cfg.num_head_channels),
                ResBlock(ch, emb_ch, cfg.dropout),
            ]
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                ich = chans.pop()
                layers = [ResBlock(ch + ich, emb_ch, cfg.dropout, int(mc * mult))]
                ch = int(mc * mult)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample())
                    ds //= 2
                self.output_blocks.append(_Seq(layers))
        out_ch = cfg.tokens_per_pixel * cfg.num_classes
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_ch, 3, padding=1)))
        name_dropout_streams(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        e = self.digit_embed(x)  # [B, T·ℓ, H, W, d/ℓ]; the ℓ digits of a token are adjacent
        return e.permute(0, 1, 4, 2, 3).reshape(b, c * e.shape[-1], h, w)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        b = x.shape[0]
        emb = None
        if cfg.time_input:
            t = sigma if sigma is not None else torch.zeros(b, device=x.device)
            t = t.reshape(-1).expand(b) if t.numel() == 1 else t.reshape(-1)
            emb = sinusoidal_embedding(t, cfg.model_channels)
            emb = self.time_embed(emb.to(self.time_embed[0].weight.dtype))
        h = self.embed(x)
        hs = []
        for blk in self.input_blocks:
            h = blk(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for blk in self.output_blocks:
            h = blk(torch.cat([h, hs.pop()], dim=1), emb)
        out = self.out(h)  # [B, T·C, H, W]
        hh, ww = out.shape[-2:]
        return out.reshape(b, cfg.tokens_per_pixel, cfg.num_classes, hh, ww).permute(0, 1, 3, 4, 2)
