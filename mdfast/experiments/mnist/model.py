"""A small conv UNet denoiser for binarized MNIST (tokens {0, 1, MASK}).

Input: int64 tokens ``x`` of shape [B, 28, 28] or [B, 784] with values 0, 1 or ``mask_index``.
The network sees two channels (pixel on, pixel masked) and is conditioned on the image's masked
fraction, which it reads from ``x`` itself (through :func:`mdfast.models.embeddings.
sinusoidal_embedding` of 1000 × the fraction): the output is a function of ``x`` alone (a time
argument, as objectives pass it, is ignored), so a sampler may reuse it while ``x`` does not
change. Presets: :data:`MODEL_PRESETS`.

Output: logits [..., 3] in the input's layout ([B, 28, 28, 3] or [B, 784, 3]) over the classes
{0, 1, MASK}. The mask class is a placeholder that losses and samplers exclude
(``exclude_index = mask_index``), as in MDLM's SUBS parameterisation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mdfast.models.dropout import KeyedDropout, name_dropout_streams
from mdfast.models.embeddings import sinusoidal_embedding

__all__ = ["MODEL_PRESETS", "MNISTUNet", "build_model"]

MODEL_PRESETS = {
    # ~0.7M parameters, UNet at 14x14 (2x2 pixel patches): the CPU demo.
    "demo": {"base": 32, "mults": (1, 2), "num_res_blocks": 1, "patch": 2},
    # ~3.9M parameters: the result table.
    "small": {"base": 64, "mults": (1, 2), "num_res_blocks": 2, "patch": 2},
    # closest to the seed's MDMUNet (base 64, 2 blocks/level; its 4th level does not fit 28x28).
    "seed": {"base": 64, "mults": (1, 2, 2), "num_res_blocks": 2, "patch": 1},
}


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout)
        self.drop = KeyedDropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        y = self.norm2(y) * (1 + scale) + shift
        y = self.conv2(self.drop(F.silu(y)))
        return self.skip(h) + y


class MNISTUNet(nn.Module):
    """Conv UNet (GroupNorm + SiLU, no attention), 28 -> 14 -> 7 and back, with skip connections.

    Args:
        base: channels at full resolution; level ``i`` has ``base * mults[i]``.
        mults: channel multipliers; ``len(mults) - 1`` downsamplings (at most 2 for 28x28).
        num_res_blocks: residual blocks per level.
        dropout: dropout inside the residual blocks.
        mask_index: the mask token id (its class is the last of the 3 outputs).
        patch: side of the pixel patches folded into channels before the first conv
            (pixel-unshuffle; 2 runs the UNet at 14x14, about 4x cheaper on CPU) and unfolded
            after the last (every pixel keeps its own logits).
    """

    vocab_size = 3

    def __init__(
        self,
        base: int = 32,
        mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        dropout: float = 0.0,
        mask_index: int = 2,
        patch: int = 1,
    ):
        super().__init__()
        if patch not in (1, 2, 4):
            raise ValueError(f"mdfast: argument 'patch' must be 1, 2 or 4, got {patch}")
        side = 28 // patch
        if not mults or side % (2 ** (len(mults) - 1)):
            raise ValueError(
                f"mdfast: argument 'mults' has {len(mults)} levels, but the {side}x{side} grid "
                f"(patch {patch}) halves cleanly only {(side & -side).bit_length() - 1} times"
            )
        self.config = {
            "base": base,
            "mults": tuple(mults),
            "num_res_blocks": num_res_blocks,
            "dropout": dropout,
            "mask_index": mask_index,
            "patch": patch,
        }
        self.patch = patch
        self.mask_index = mask_index
        emb_dim = 4 * base
        self.time_mlp = nn.Sequential(
            nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.stem = nn.Conv2d(2 * patch * patch, base, 3, padding=1)
        chans = [base * m for m in mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_ch = [base]
        ch = base
        for i, c in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(ch, c, emb_dim, dropout))
                ch = c
                skip_ch.append(ch)
            self.down.append(blocks)
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_ch.append(ch)
        self.mid = nn.ModuleList(
            [_ResBlock(ch, ch, emb_dim, dropout), _ResBlock(ch, ch, emb_dim, dropout)]
        )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(_ResBlock(ch + skip_ch.pop(), c, emb_dim, dropout))
                ch = c
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out_norm = _norm(ch)
        self.out = nn.Conv2d(ch, self.vocab_size * patch * patch, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        name_dropout_streams(self)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``x``; ``sigma`` (the objectives' time argument) is ignored: the net reads
        its noise level from the mask."""
        flat = x.dim() == 2
        if flat:
            if x.shape[1] != 784:
                raise ValueError(
                    f"mdfast: argument 'x' must be [B, 784] or [B, 28, 28], got {list(x.shape)}"
                )
            x = x.view(-1, 28, 28)
        masked = x == self.mask_index
        pixel = (x == 1) & ~masked
        inp = torch.stack([pixel, masked], dim=1).to(self.stem.weight.dtype)
        masked_fraction = masked.flatten(1).float().mean(1)
        level = sinusoidal_embedding(masked_fraction, self.stem.out_channels, scale=1000.0)
        emb = self.time_mlp(level)

        h = self.stem(F.pixel_unshuffle(inp, self.patch) if self.patch > 1 else inp)
        skips = [h]
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = F.interpolate(h, scale_factor=2, mode="nearest")
                h = self.upsample[i](h)
        logits = self.out(F.silu(self.out_norm(h)))
        if self.patch > 1:
            logits = F.pixel_shuffle(logits, self.patch)
        logits = logits.permute(0, 2, 3, 1)
        return logits.reshape(-1, 784, self.vocab_size) if flat else logits


def build_model(preset: str | dict = "demo") -> MNISTUNet:
    """An :class:`MNISTUNet` from a name of :data:`MODEL_PRESETS` or a dict of its arguments."""
    if isinstance(preset, str):
        if preset not in MODEL_PRESETS:
            raise ValueError(
                f"mdfast: unknown model preset {preset!r}; valid: {', '.join(MODEL_PRESETS)}"
            )
        preset = MODEL_PRESETS[preset]
    return MNISTUNet(**preset)
