"""Image data (mdfast.data.images): the ImageNet-32 pickled batches as users keep them, CIFAR-10's
missing-file error, flips and PNG grids."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mdfast.data.images import (
    image_grid,
    load_cifar10,
    load_image_dataset,
    load_imagenet32,
    random_hflip,
    save_image_grid,
)


def _write_batch(path, n, rng, size=32):
    data = rng.integers(0, 256, (n, 3 * size * size), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(1, 1001, n)]  # the files count classes from 1
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"data": data, "labels": labels, "mean": data.mean(0)}, f)
    return data, labels


@pytest.mark.parametrize("layout", ["seed", "archives", "flat"])
def test_imagenet32_pickles_load_with_planes_and_zero_based_labels(tmp_path, layout, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    dirs = {
        "seed": ("train", "val"),
        "archives": ("Imagenet32_train", "Imagenet32_val"),
        "flat": ("", ""),
    }[layout]
    d1, l1 = _write_batch(tmp_path / dirs[0] / "train_data_batch_1", 5, rng)
    d2, l2 = _write_batch(tmp_path / dirs[0] / "train_data_batch_2", 3, rng)
    dv, lv = _write_batch(tmp_path / dirs[1] / "val_data", 4, rng)
    train = load_imagenet32(tmp_path, "train", max_files=2)
    assert train["input_ids"].dtype == torch.uint8 and train["input_ids"].shape == (8, 3, 32, 32)
    data = np.concatenate([d1, d2])
    # pixel (c, y, x) of image i is byte c·1024 + y·32 + x: the R, G, B planes, row-major
    i, c, y, x = 6, 2, 5, 17
    assert train["input_ids"][i, c, y, x].item() == data[i, c * 1024 + y * 32 + x]
    assert train["label"].tolist() == [v - 1 for v in l1 + l2]
    val = load_image_dataset("imagenet32", tmp_path, "eval")
    assert torch.equal(val["input_ids"], torch.from_numpy(dv.reshape(4, 3, 32, 32)))
    assert val["label"].tolist() == [v - 1 for v in lv]


def test_imagenet32_missing_or_malformed_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_data_batch_1"):
        load_imagenet32(tmp_path, "train")
    (tmp_path / "val").mkdir()
    with open(tmp_path / "val" / "val_data", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [1, 2]}, f)
    with pytest.raises(ValueError, match="val_data"):
        load_imagenet32(tmp_path, "val")
    with pytest.raises(ValueError, match="split"):
        load_imagenet32(tmp_path, "test")


def test_cifar10_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown image dataset"):
        load_image_dataset("mnist", tmp_path, "train")


def test_random_hflip_flips_exactly_the_chosen_images():
    x = torch.arange(2 * 3 * 2 * 4, dtype=torch.uint8).view(2, 3, 2, 4)
    out = random_hflip(x, torch.tensor([0.2, 0.7]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_image_grid_places_every_image(tmp_path):
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    grid = image_grid(images, nrow=3, pad=1)
    assert grid.shape == (3, 2 * 5 + 1, 3 * 5 + 1)
    assert torch.equal(grid[:, 6:10, 6:10], images[4])  # row 1, column 1
    path = save_image_grid(images, tmp_path / "g.png", nrow=3, scale=2)
    from PIL import Image

    assert Image.open(path).size == (2 * 20, 2 * 14)  # pad 2: 3·6+2 by 2·6+2
    with pytest.raises(ValueError, match="uint8"):
        image_grid(images.float())
