"""Prepared token files: a raw ``[rows, L]`` array on disk, memory-mapped, plus a JSON header.

A prepared directory holds, per split (``train``, ``validation``):

- ``<split>.bin``: token ids, row-major ``[rows, length]``, ``uint16`` when the model's
  vocabulary (mask included) fits in 65536 ids, else ``uint32``;
- ``<split>.lengths.bin`` (pad layout only): ``uint32`` real length of every row;
- ``<split>.json``: the header, written last (its presence means the split is complete):
  ``rows``, ``length``, ``dtype``, ``layout``, the tokenizer and its ids (``vocab_size``,
  ``model_vocab_size``, ``mask_id``, ``bos_id``, ``eos_id``, ``pad_id``), ``max_id``,
  ``num_tokens``, ``documents`` and where the text came from (``source``, ``corpus``,
  ``detokenizer``, ``text_field``).

:class:`TokenFile` never reads the file whole: rows are gathered per batch from the memory map
and only then widened to int64 (``__getitems__``, which :func:`mdfast.train.data.collate` and
PyTorch's DataLoader call with a batch of indices). So a 9B-token OpenWebText costs one page
cache, shared by every rank, instead of 72 GB of int64 per rank.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

__all__ = ["HEADER_FORMAT", "TokenFile", "header_path", "read_header", "split_paths"]

HEADER_FORMAT = "mdfast-tokens/1"
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def split_paths(path: str, split: str) -> dict:
    """File names of ``split`` in the prepared directory ``path``."""
    return {
        "header": os.path.join(path, f"{split}.json"),
        "tokens": os.path.join(path, f"{split}.bin"),
        "lengths": os.path.join(path, f"{split}.lengths.bin"),
    }


def header_path(path: str, split: str) -> str:
    return split_paths(path, split)["header"]


def read_header(path: str, split: str) -> dict:
    """The header of ``split`` in ``path``; a clear error when the split is missing or was
    never completed."""
    files = split_paths(path, split)
    hp = files["header"]
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"mdfast: prepared data directory '{path}' does not exist (run mdfast prepare-text "
            "first, or set data.path)"
        )
    if not os.path.exists(hp):
        if os.path.exists(files["tokens"] + ".partial"):
            raise FileNotFoundError(
                f"mdfast: '{files['tokens']}' was never completed (an interrupted prepare-text); "
                "run the same prepare-text command again to resume it"
            )
        have = sorted(f[:-5] for f in os.listdir(path) if f.endswith(".json"))
        raise FileNotFoundError(
            f"mdfast: no split '{split}' in prepared directory '{path}' (missing {hp}); "
            f"splits there: {have}"
        )
    with open(hp) as f:
        try:
            header = json.load(f)
        except ValueError as e:
            raise ValueError(f"mdfast: header '{hp}' is not valid JSON ({e})") from None
    if header.get("format") != HEADER_FORMAT:
        raise ValueError(
            f"mdfast: '{hp}' field 'format' is {header.get('format')!r}, expected {HEADER_FORMAT!r}"
        )
    return header


class TokenFile:
    """Memory-mapped rows of a prepared split (see the module docstring).

    ``ds[i]`` is one row, ``ds.__getitems__(idx)`` a batch: ``{"input_ids": int64 [B, L]}``
    plus ``"attention_mask"`` (int64, 1 on real tokens) for the pad layout. Every batch is
    checked against the vocabulary (a corrupt file fails with the file, row and id).
    """

    def __init__(self, path: str, split: str = "train"):
        self.path, self.split = path, split
        self.header = h = read_header(path, split)
        files = split_paths(path, split)
        self.file = files["tokens"]
        hp = files["header"]
        for key in ("rows", "length", "dtype", "layout", "model_vocab_size", "mask_id"):
            if key not in h:
                raise ValueError(f"mdfast: header '{hp}' has no field '{key}'")
        if h["dtype"] not in _DTYPES:
            raise ValueError(
                f"mdfast: header '{hp}' field 'dtype' is {h['dtype']!r}; valid: {list(_DTYPES)}"
            )
        self.rows, self.length = int(h["rows"]), int(h["length"])
        self.vocab = int(h["model_vocab_size"])
        if self.rows <= 0:
            raise ValueError(
                f"mdfast: split '{split}' in '{path}' is empty (header field 'rows' = 0)"
            )
        dtype = np.dtype(_DTYPES[h["dtype"]])
        if self.vocab > np.iinfo(dtype).max + 1:
            raise ValueError(
                f"mdfast: header '{hp}' field 'model_vocab_size' ({self.vocab}) does not fit "
                f"field 'dtype' {h['dtype']}"
            )
        if int(h.get("max_id", 0)) >= self.vocab:
            raise ValueError(
                f"mdfast: '{self.file}' holds token id {h['max_id']} (header field 'max_id') >= "
                f"the vocabulary size {self.vocab} (field 'model_vocab_size')"
            )
        if not os.path.exists(self.file):
            raise FileNotFoundError(f"mdfast: token file '{self.file}' (of header {hp}) is missing")
        want = self.rows * self.length * dtype.itemsize
        size = os.path.getsize(self.file)
        if size != want:
            raise ValueError(
                f"mdfast: '{self.file}' has {size} bytes but header fields 'rows' × 'length' × "
                f"itemsize = {self.rows} × {self.length} × {dtype.itemsize} = {want}"
            )
        self.tokens = np.memmap(self.file, dtype=dtype, mode="r", shape=(self.rows, self.length))
        self.lengths = None
        if h["layout"] == "pad":
            lf = files["lengths"]
            if not os.path.exists(lf) or os.path.getsize(lf) != 4 * self.rows:
                raise ValueError(
                    f"mdfast: pad-layout split needs '{lf}' with {self.rows} uint32 lengths "
                    "(header field 'rows')"
                )
            self.lengths = np.memmap(lf, dtype=np.uint32, mode="r", shape=(self.rows,))

    def __len__(self) -> int:
        return self.rows

    def __repr__(self) -> str:
        return (
            f"TokenFile({self.file!r}, rows={self.rows}, length={self.length}, "
            f"layout={self.header['layout']!r}, dtype={self.header['dtype']})"
        )

    def __getitems__(self, idx) -> dict:
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.rows):
            raise IndexError(f"mdfast: row index out of range for {self!r}")
        rows = self.tokens[idx]  # copies only these rows out of the map
        if rows.size:
            hi = int(rows.max())
            if hi >= self.vocab:
                r = int(idx[int(np.argmax(rows.max(axis=1)))])
                raise ValueError(
                    f"mdfast: '{self.file}' row {r} holds token id {hi} >= the vocabulary size "
                    f"{self.vocab} (header field 'model_vocab_size')"
                )
        out = {"input_ids": torch.from_numpy(rows.astype(np.int64))}
        if self.lengths is not None:
            n = torch.from_numpy(self.lengths[idx].astype(np.int64))
            out["attention_mask"] = (torch.arange(self.length)[None, :] < n[:, None]).long()
        return out

    def __getitem__(self, i: int) -> dict:
        return {k: v[0] for k, v in self.__getitems__([int(i)]).items()}

    def check_compatible(
        self,
        *,
        vocab_size: int | None = None,
        mask_index: int | None = None,
        length: int | None = None,
        layout: str | None = None,
        what: str = "the preset",
    ) -> None:
        """Raise when the header disagrees with the model / objective / data settings."""
        hp = header_path(self.path, self.split)
        checks = (
            ("model_vocab_size", vocab_size, "model.vocab_size"),
            ("mask_id", mask_index, "objective.mask_index"),
            ("length", length, "data.length"),
            ("layout", layout, "data.layout"),
        )
        for field, want, option in checks:
            if want is None or (isinstance(want, int) and want < 0):
                continue
            if self.header.get(field) != want:
                raise ValueError(
                    f"mdfast: header '{hp}' field '{field}' = {self.header.get(field)!r} but "
                    f"{what} has {option}={want!r} (prepare the data for this preset, or "
                    "override the option)"
                )
