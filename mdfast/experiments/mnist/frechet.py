"""Sample quality of binarized digits without a download: Fréchet distance
(:func:`mdfast.metrics.frechet.frechet_distance`) in the feature space of a small digit classifier
that mdfast trains on the shipped MNIST digits, plus that classifier's confidence.

The classifier (two conv layers, a 128-unit feature layer, 10 outputs) is trained once on the
shipped training split (binarized, deterministic seed) and cached on disk:
:func:`classifier_cache_path` = ``$MDFAST_CACHE_DIR/digit_classifier_v1.pt`` (default
``~/.cache/mdfast``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from mdfast.experiments.mnist.data import BinarizedMNIST
from mdfast.metrics.classifier import train_classifier as _train
from mdfast.metrics.frechet import frechet_distance_features as frechet_distance

__all__ = [
    "DigitClassifier",
    "classifier_cache_path",
    "classifier_confidence",
    "digit_frechet",
    "features",
    "frechet_distance",
    "load_classifier",
    "train_classifier",
]

_VERSION = "v1"


class DigitClassifier(nn.Module):
    """Binarized 28×28 digit -> (128 features, 10 logits)."""

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 7 * 7, self.feature_dim)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(self.feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1, 28, 28).float()
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def classifier_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the trained classifier is cached: ``cache_dir`` or ``$MDFAST_CACHE_DIR`` (default
    ``~/.cache/mdfast``), file ``digit_classifier_<version>.pt``."""
    if cache_dir is None:
        cache_dir = os.environ.get("MDFAST_CACHE_DIR", Path.home() / ".cache" / "mdfast")
    return Path(cache_dir) / f"digit_classifier_{_VERSION}.pt"


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 4, seed: int = 0
) -> DigitClassifier:
    """Train the classifier on binarized digits [N, 28, 28] in {0, 1} (deterministic), with
    :func:`mdfast.metrics.classifier.train_classifier` (Adam 2e-3, batches of 128)."""
    return _train(DigitClassifier, images, labels, epochs=epochs, seed=seed)


def load_classifier(cache_dir: str | os.PathLike | None = None) -> DigitClassifier:
    """The cached classifier, trained on the shipped training digits on first use."""
    path = classifier_cache_path(cache_dir)
    model = DigitClassifier()
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, EOFError):
            pass  # a corrupt cache is retrained and rewritten
    data = BinarizedMNIST(source="shipped", train=True)
    model = train_classifier(data.tokens, data.labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


@torch.no_grad()
def features(classifier: DigitClassifier, images: torch.Tensor, batch_size: int = 500):
    """(features float64 [N, 128], class probabilities float64 [N, 10]) of digits in {0, 1}."""
    classifier = classifier.eval()
    feats, probs = [], []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].cpu()
        f = classifier.features(x)
        feats.append(f.double())
        probs.append(classifier.head(f).softmax(-1).double())
    return torch.cat(feats), torch.cat(probs)


def digit_frechet(
    samples: torch.Tensor, reference: torch.Tensor, classifier: DigitClassifier | None = None
) -> float:
    """Fréchet distance between binarized digit sets [N, 28, 28] (or [N, 784]) in {0, 1}."""
    classifier = classifier if classifier is not None else load_classifier()
    return frechet_distance(features(classifier, samples)[0], features(classifier, reference)[0])


def classifier_confidence(
    samples: torch.Tensor, classifier: DigitClassifier | None = None
) -> dict[str, float]:
    """``confidence``: mean top-class probability; ``class_entropy_bits``: entropy of the histogram
    of predicted classes (log2 10 ≈ 3.32 when every digit is equally frequent)."""
    classifier = classifier if classifier is not None else load_classifier()
    probs = features(classifier, samples)[1]
    hist = torch.bincount(probs.argmax(1), minlength=10).double() / probs.shape[0]
    nz = hist[hist > 0]
    return {
        "confidence": probs.max(1).values.mean().item(),
        "class_entropy_bits": -(nz * nz.log()).sum().item() / math.log(2),
    }
