"""The CPU-scale data of the MDM-Prime experiment: scikit-learn's 8×8 handwritten digits (1,797
images shipped inside the scikit-learn wheel as ``sklearn/datasets/data/digits.csv.gz``, read
directly, no download) at 16 grey levels, and a small digit classifier whose features give a
classifier-Fréchet score of samples.

Grey levels: the files hold v ∈ {0, …, 16}; level = ⌊16 v / 17⌋ ∈ {0, …, 15}, so C = 16
(ℓ = 2 → base 4, ℓ = 4 → base 2: binary digits). Split: a fixed permutation (seed 0), the last
300 images held out.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mdfast.metrics.classifier import train_classifier as fit
from mdfast.metrics.frechet import GaussianStats

__all__ = [
    "LEVELS",
    "DigitFeatures",
    "classifier_frechet",
    "load_digits8",
    "sklearn_file",
    "train_classifier",
]

LEVELS = 16
HELD_OUT = 300


def load_digits8(split: str = "train") -> dict:
    """``{"input_ids": uint8 [N, 1, 8, 8] in [0, 16), "label": int64 [N]}`` of ``split``
    (``"train"``: 1,497 digits, ``"eval"``: the 300 held out)."""
    if split not in ("train", "eval"):
        raise ValueError(f"mdfast: digits8 split must be 'train' or 'eval', got '{split}'")
    rows = torch.from_numpy(np.loadtxt(sklearn_file("data", "digits.csv.gz"), delimiter=","))
    images, target = rows[:, :64].view(-1, 8, 8), rows[:, 64].long()
    levels = torch.div(images * LEVELS, 17, rounding_mode="floor").clamp_(0, LEVELS - 1)
    order = torch.randperm(len(levels), generator=torch.Generator().manual_seed(0))
    idx = order[:-HELD_OUT] if split == "train" else order[-HELD_OUT:]
    return {
        "input_ids": levels[idx].to(torch.uint8).unsqueeze(1).contiguous(),
        "label": target[idx],
    }


def sklearn_file(*parts: str) -> Path:
    """A data file shipped inside the scikit-learn package (found without importing it)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("mdfast: the 8x8 digits ship with scikit-learn; pip install it")
    path = Path(spec.origin).parent.joinpath("datasets", *parts)
    if not path.is_file():
        raise FileNotFoundError(f"mdfast: '{path}' not found in the scikit-learn installation")
    return path


class DigitFeatures(nn.Module):
    """8×8 grey digits (levels) -> 32 features -> 10 logits."""

    feature_dim = 32

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, self.feature_dim), nn.ReLU()
        )
        self.head = nn.Linear(self.feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(x.shape[0], 64).float() / (LEVELS - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(seed: int = 0, epochs: int = 60) -> DigitFeatures:
    """The classifier trained on the training split (deterministic; a few seconds on a CPU):
    :func:`mdfast.metrics.classifier.train_classifier`, Adam 3e-3 with weight decay 1e-4,
    batches of 64."""
    data = load_digits8("train")
    return fit(DigitFeatures, data["input_ids"], data["label"], epochs=epochs, lr=3e-3,
               batch_size=64, weight_decay=1e-4, seed=seed)  # fmt: skip


@torch.no_grad()
def classifier_frechet(classifier: DigitFeatures, samples: torch.Tensor, reference) -> float:
    """Fréchet distance between Gaussians fitted to the classifier features of ``samples``
    (uint8 [N, 1, 8, 8]) and of ``reference`` (images, or their :class:`GaussianStats`)."""
    a = GaussianStats.of(classifier.features(samples).double())
    b = (
        reference
        if isinstance(reference, GaussianStats)
        else GaussianStats.of(classifier.features(reference).double())
    )
    return a.frechet(b)
