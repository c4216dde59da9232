"""Pre-tokenised VQ data on disk: index grids (e.g. 32×32 VQ-f8 codes of 256² images) with
labels or text embeddings, memory-mapped so a 1.28M-image set is never loaded whole.

Formats:

* ``.npy``: the index array [N, h, w] (any integer dtype), opened with ``mmap_mode="r"``; labels
  from a separate ``.npy`` [N] (``labels_path``), text embeddings from one [N, T, C]
  (``context_path``).
* ``.npz`` (``np.savez``, uncompressed): arrays ``input_ids`` (or ``indices``), optionally
  ``label`` (or ``labels``) and ``context``. Stored (uncompressed) members are memory-mapped in
  place; compressed ones (``np.savez_compressed``) are read into memory.

:func:`load_vq_tokens` returns a dict of columns the trainer batches directly
(:func:`mdfast.train.data.collate` indexes every column with the batch's rows): ``input_ids`` a
:class:`MappedArray` of int64 rows, ``label`` an int64 tensor, ``context`` a :class:`MappedArray`
of float32 rows. Every index is checked against ``codebook_size`` once, in chunks: an index
≥ ``codebook_size`` (which would collide with the mask id) raises an error naming the option.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["MappedArray", "load_vq_tokens", "open_array", "save_vq_tokens"]


class MappedArray:
    """Rows of a (memory-mapped) numpy array as torch tensors of ``dtype``: ``a[idx]`` reads only
    those rows (``idx`` an int, a slice, or an index tensor / array)."""

    def __init__(self, array: np.ndarray, dtype: torch.dtype):
        self.array = array
        self.dtype = dtype

    def __len__(self) -> int:
        return self.array.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def split(self, start: int, stop: int) -> MappedArray:
        """Rows [start, stop) as another lazy :class:`MappedArray` (a view of the same map)."""
        return MappedArray(self.array[start:stop], self.dtype)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        if isinstance(idx, np.ndarray) and idx.ndim == 1 and idx.size > 1:
            order = np.argsort(idx, kind="stable")  # sorted reads from the map, then unsort
            rows = np.asarray(self.array[idx[order]])
            out = np.empty_like(rows)
            out[order] = rows
        else:
            out = np.asarray(self.array[idx])
        return torch.from_numpy(np.ascontiguousarray(out)).to(self.dtype)

    def __repr__(self) -> str:
        return f"MappedArray(shape={self.shape}, dtype={self.dtype})"


def _npz_member(path: Path, name: str) -> np.ndarray:
    """Member ``name`` of an ``.npz``: a read-only memmap when stored uncompressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with zf.open(info) as f:
                return np.lib.format.read_array(f)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"mdfast: '{path}' member '{name}' holds Python objects, not numbers")
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def _npz_names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        return {n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")}


def open_array(path: str | os.PathLike, name: str | None = None, *, option: str = "data.path"):
    """The array at ``path`` (``.npy``, memory-mapped) or member ``name`` of an ``.npz``; a
    FileNotFoundError naming ``option`` when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mdfast: {option} '{path}' not found")
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if path.suffix == ".npz":
        if name is None:
            raise ValueError(f"mdfast: {option} '{path}' is an .npz: name the member to read")
        return _npz_member(path, name)
    raise ValueError(f"mdfast: {option} '{path}' must be a .npy or .npz file")


def _first(names: set[str], *candidates: str) -> str | None:
    return next((c for c in candidates if c in names), None)


def _check_indices(ids: np.ndarray, codebook_size: int, path: Path, chunk: int = 1 << 16):
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"mdfast: data.path '{path}' holds {ids.dtype} indices, not integers")
    for start in range(0, ids.shape[0], chunk):
        block = np.asarray(ids[start : start + chunk])
        lo, hi = int(block.min(initial=0)), int(block.max(initial=0))
        if lo < 0 or hi >= codebook_size:
            bad = np.argwhere((block < 0) | (block >= codebook_size))[0]
            value = int(block[tuple(bad)])
            raise ValueError(
                f"mdfast: data.path '{path}' holds VQ index {value} at row {start + int(bad[0])}, "
                f"outside [0, data.codebook_size={codebook_size}) (index codebook_size is the mask)"
            )


def load_vq_tokens(
    path: str | os.PathLike,
    *,
    codebook_size: int,
    labels_path: str | os.PathLike | None = None,
    context_path: str | os.PathLike | None = None,
    check: bool = True,
) -> dict:
    """Columns ``input_ids`` (+ ``label``, ``context``) of a VQ token file (module docstring)."""
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
        raise ValueError(f"mdfast: data.codebook_size must be an int >= 1, got {codebook_size!r}")
    path = Path(path)
    labels = context = None
    if path.suffix == ".npz" and path.is_file():
        names = _npz_names(path)
        key = _first(names, "input_ids", "indices")
        if key is None:
            raise ValueError(
                f"mdfast: data.path '{path}' has no 'input_ids' (or 'indices') array; it has "
                f"{sorted(names)}"
            )
        ids = _npz_member(path, key)
        lab = _first(names, "label", "labels")
        labels = None if lab is None else _npz_member(path, lab)
        context = _npz_member(path, "context") if "context" in names else None
    else:
        ids = open_array(path)
    if labels_path:
        labels = open_array(labels_path, option="data.labels_path")
    if context_path:
        context = open_array(context_path, option="data.context_path")
    if check:
        _check_indices(ids, codebook_size, path)
    out = {"input_ids": MappedArray(ids, torch.int64)}
    for name, arr in (("label", labels), ("context", context)):
        if arr is not None and arr.shape[0] != ids.shape[0]:
            raise ValueError(
                f"mdfast: '{path}' has {ids.shape[0]} index grids but {arr.shape[0]} rows of {name}"
            )
    if labels is not None:
        out["label"] = torch.from_numpy(np.asarray(labels).astype(np.int64).reshape(-1))
    if context is not None:
        out["context"] = MappedArray(context, torch.float32)
    return out


def save_vq_tokens(path: str | os.PathLike, input_ids, label=None, context=None) -> Path:
    """Write an uncompressed ``.npz`` (memory-mappable by :func:`load_vq_tokens`) atomically:
    ``input_ids`` as int16 when the indices fit (VQ-f8's 16384 codes do), else int32."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(torch.as_tensor(input_ids).cpu())
    small = ids.size == 0 or (ids.min() >= 0 and ids.max() < 2**15)
    arrays = {"input_ids": ids.astype(np.int16 if small else np.int32)}
    if label is not None:
        arrays["label"] = np.asarray(torch.as_tensor(label).cpu()).astype(np.int64)
    if context is not None:
        arrays["context"] = np.asarray(torch.as_tensor(context).cpu()).astype(np.float16)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path
