"""A small image classifier as a metric: its feature layer for classifier-Fréchet scores (through
:class:`mdfast.metrics.fid.FID` with ``extractor=``) and its predictions for the accuracy of
class-conditional samples on their intended class.

* :class:`ConvClassifier`: two 3×3 conv + 2×2 max-pool stages, a ReLU feature layer, a linear
  head; any square image size and channel count.
* :func:`train_classifier`: Adam, cross-entropy, seeded (init, shuffling) so the same data and
  seed give the same network; used by every experiment that scores samples with a classifier.
* :func:`predict`: features and class probabilities in batches; :func:`intended_class_accuracy`:
  the fraction of samples whose predicted class is the one they were generated for.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "ClassifierFeatures",
    "ConvClassifier",
    "intended_class_accuracy",
    "predict",
    "train_classifier",
]


class ConvClassifier(nn.Module):
    """[N, C, S, S] (or [N, S, S] for C = 1) floats -> logits [N, num_classes];
    :meth:`features` -> [N, feature_dim]."""

    def __init__(
        self,
        image_size: int,
        num_classes: int,
        *,
        in_channels: int = 1,
        width: int = 32,
        feature_dim: int = 64,
        dropout: float = 0.3,
    ):
        super().__init__()
        if image_size < 4:
            raise ValueError(f"mdfast: argument 'image_size' must be >= 4, got {image_size}")
        self.image_size, self.in_channels = image_size, in_channels
        self.feature_dim = feature_dim
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        side = image_size // 4
        self.fc = nn.Linear(2 * width * side * side, feature_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        x = x.reshape(-1, self.in_channels, s, s).float()
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


class ClassifierFeatures(nn.Module):
    """The feature layer of a classifier as an ``extractor`` for :class:`mdfast.metrics.fid.FID`."""

    def __init__(self, classifier: nn.Module, name: str = "classifier"):
        super().__init__()
        self.classifier = classifier
        self.fid_name = name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


def train_classifier(
    make_model: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 4,
    lr: float = 2e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> nn.Module:
    """Train ``make_model()`` (built under ``torch.manual_seed(seed)``) on ``images`` / ``labels``
    with Adam for ``epochs`` epochs of shuffled batches; the global RNG state is left untouched.
    Returns the model in eval mode."""
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(
            f"mdfast: train_classifier needs as many labels as images (> 0), got "
            f"{images.shape[0]} images and {labels.shape[0]} labels"
        )
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        n = images.shape[0]
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(model(images[idx]), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.eval()


@torch.no_grad()
def predict(classifier: nn.Module, images: torch.Tensor, batch_size: int = 500):
    """(features float64 [N, D], class probabilities float64 [N, K]) of ``images``."""
    classifier = classifier.eval()
    feats, probs = [], []
    for start in range(0, images.shape[0], batch_size):
        f = classifier.features(images[start : start + batch_size])
        feats.append(f.double())
        probs.append(classifier.head(f).softmax(-1).double())
    return torch.cat(feats), torch.cat(probs)


def intended_class_accuracy(probs: torch.Tensor, intended: torch.Tensor) -> float:
    """Fraction of samples whose most probable class (``probs`` [N, K]) is ``intended`` [N]."""
    if probs.shape[0] != intended.shape[0]:
        raise ValueError(
            f"mdfast: {probs.shape[0]} predictions but {intended.shape[0]} intended classes"
        )
    return (probs.argmax(1).cpu() == intended.cpu()).double().mean().item()
