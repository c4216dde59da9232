"""Image datasets as token grids: CIFAR-10 (torchvision's files) and downsampled ImageNet-32 (the
pickled batches), random horizontal flips, and PNG grids.

Images are kept as ``uint8 [N, 3, H, W]``; a sub-pixel value v ∈ [0, 255] is class v of C = 256
(the MDM image experiments' "pixels ×255 → 256 classes", without a float round trip). Both
loaders return ``{"input_ids": uint8 [N, 3, H, W],
"label": int64 [N]}``, the dict batches of :mod:`mdfast.train.data`.

* CIFAR-10: ``torchvision.datasets.CIFAR10(root, train, download=False)`` reading
  ``root/cifar-10-batches-py/``; split ``"train"`` (50k) or ``"test"`` (10k).
* ImageNet-32 (Chrabaszcz et al., the ``Imagenet32_train`` / ``Imagenet32_val`` pickles): split
  ``"train"`` reads ``train_data_batch_1`` … ``train_data_batch_10``, ``"val"`` reads
  ``val_data``. Each file is a pickled dict with ``data`` (uint8 [n, 3072]: the R, G and B planes,
  each 32×32 row-major) and ``labels`` (1-based). The files are looked for in ``root/train/`` and
  ``root/val/`` (the MDM-Prime layout), ``root/Imagenet32_train/`` and ``root/Imagenet32_val/``
  (the unzipped archives), or ``root`` itself.

Nothing downloads: a missing file raises ``FileNotFoundError`` naming it and where it goes.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CIFAR10_DIR",
    "IMAGENET32_TRAIN_FILES",
    "IMAGENET32_VAL_FILE",
    "image_grid",
    "load_cifar10",
    "load_image_dataset",
    "load_imagenet32",
    "random_hflip",
    "save_image_grid",
]

CIFAR10_DIR = "cifar-10-batches-py"
IMAGENET32_TRAIN_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
IMAGENET32_VAL_FILE = "val_data"
_IMAGENET32_DIRS = {
    "train": ("train", "Imagenet32_train", ""),
    "val": ("val", "Imagenet32_val", ""),
}


def _as_dataset(images: np.ndarray, labels) -> dict:
    return {
        "input_ids": torch.from_numpy(np.ascontiguousarray(images)),
        "label": torch.as_tensor(np.asarray(labels), dtype=torch.int64),
    }


def load_cifar10(root: str | os.PathLike, split: str = "train") -> dict:
    """CIFAR-10 ``split`` (``"train"`` or ``"test"``) from ``root/cifar-10-batches-py``."""
    if split not in ("train", "test"):
        raise ValueError(f"mdfast: CIFAR-10 split must be 'train' or 'test', got '{split}'")
    if not root or not (Path(root) / CIFAR10_DIR).is_dir():
        raise FileNotFoundError(
            f"mdfast: CIFAR-10 not found: no directory '{Path(root or '.') / CIFAR10_DIR}'"
            " (the python version of CIFAR-10, cifar-10-python.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html, unpacked into data.root)"
        )
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=split == "train", download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"mdfast: CIFAR-10 under '{root}' is incomplete or corrupted ({e})"
        ) from None
    return _as_dataset(ds.data.transpose(0, 3, 1, 2), ds.targets)


def _imagenet32_file(root: Path, split: str, name: str) -> Path:
    tried = [root / d / name if d else root / name for d in _IMAGENET32_DIRS[split]]
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"mdfast: ImageNet-32 file '{name}' not found; looked in "
        + ", ".join(str(p) for p in tried)
        + " (the downsampled-ImageNet 32x32 pickles from https://image-net.org/download-images)"
    )


def _read_imagenet32_batch(path: Path, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f)  # the dataset's own format: a dict of numpy arrays and a label list
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        raise ValueError(f"mdfast: '{path}' is not an ImageNet-32 batch (no 'data' / 'labels')")
    data = np.asarray(d["data"], dtype=np.uint8)
    pixels = 3 * image_size * image_size
    if data.ndim != 2 or data.shape[1] != pixels:
        raise ValueError(
            f"mdfast: '{path}' holds data of shape {list(data.shape)}, expected [n, {pixels}]"
        )
    labels = np.asarray(d["labels"], dtype=np.int64) - 1  # the files count classes from 1
    return data.reshape(-1, 3, image_size, image_size), labels


def load_imagenet32(
    root: str | os.PathLike, split: str = "train", *, image_size: int = 32, max_files: int = 10
) -> dict:
    """ImageNet-32 ``split`` (``"train"``: the ten training batches, or the first ``max_files``;
    ``"val"``: ``val_data``) as uint8 [N, 3, 32, 32] and 0-based labels."""
    if split not in _IMAGENET32_DIRS:
        raise ValueError(f"mdfast: ImageNet-32 split must be 'train' or 'val', got '{split}'")
    root = Path(root or ".")
    names = IMAGENET32_TRAIN_FILES[:max_files] if split == "train" else (IMAGENET32_VAL_FILE,)
    parts = [_read_imagenet32_batch(_imagenet32_file(root, split, n), image_size) for n in names]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return _as_dataset(images, labels)


def load_image_dataset(name: str, root: str | os.PathLike, split: str) -> dict:
    """``name`` = ``"cifar10"`` or ``"imagenet32"``; ``split`` = ``"train"`` or ``"eval"`` (CIFAR-10
    test set; ImageNet-32 validation set) or the loaders' own split names."""
    if name == "cifar10":
        return load_cifar10(root, "test" if split == "eval" else split)
    if name == "imagenet32":
        return load_imagenet32(root, "val" if split == "eval" else split)
    raise ValueError(f"mdfast: unknown image dataset '{name}'; valid: ['cifar10', 'imagenet32']")


def random_hflip(images: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Flip image i ([B, ..., W]) left-right where its uniform u_i < 1/2 (a random horizontal
    flip with the caller's uniforms, so the draw can be keyed)."""
    flip = (u.reshape(-1) < 0.5).to(images.device)
    if flip.shape[0] != images.shape[0]:
        raise ValueError(f"mdfast: need one uniform per image, got {flip.shape[0]}")
    shape = (-1,) + (1,) * (images.dim() - 1)
    return torch.where(flip.view(shape), images.flip(-1), images)


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> torch.Tensor:
    """uint8 [N, C, H, W] (C = 1 or 3) -> one uint8 [C, rows·(H+pad)+pad, nrow·(W+pad)+pad] grid
    on a grey background."""
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.dtype != torch.uint8:
        raise ValueError(
            f"mdfast: grid images must be uint8 [N, 1 or 3, H, W], got {images.dtype} "
            f"{list(images.shape)}"
        )
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / nrow))
    grid = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 96, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i].cpu()
    return grid


def save_image_grid(
    images: torch.Tensor, path: str | os.PathLike, *, nrow: int | None = None, scale: int = 2
) -> Path:
    """Write :func:`image_grid` of ``images`` as a PNG (each pixel ``scale``² screen pixels)."""
    from PIL import Image

    grid = image_grid(images, nrow)
    arr = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path
