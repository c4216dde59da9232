"""PNG grids of binarized digits."""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["save_grid"]


def save_grid(tokens: torch.Tensor, path, *, nrow: int | None = None, scale: int = 3) -> Path:
    """PNG grid of binarized digits [N, 28, 28] (white on black, 2-pixel gaps)."""
    from PIL import Image

    tokens = tokens.reshape(-1, 28, 28).cpu()
    n = tokens.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    pad = 2
    grid = torch.full((ncol * (28 + pad) + pad, nrow * (28 + pad) + pad), 80, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = pad + r * (28 + pad), pad + c * (28 + pad)
        grid[y : y + 28, x : x + 28] = (tokens[i] == 1).to(torch.uint8) * 255
    img = Image.fromarray(grid.numpy())
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
