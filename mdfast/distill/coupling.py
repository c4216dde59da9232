"""Coupling files of (IM-)ReDi: memory-mapped arrays plus a JSON header, like the prepared token
files of :mod:`mdfast.data.text.tokens`.

A coupling directory holds

- ``xT.bin``: the partly masked inputs x_t, ``[rows, length]`` token ids (``uint16`` when the
  model vocabulary fits in 65536 ids, else ``uint32``, as prepared text);
- ``x0.bin``: the teacher's samples x̂₀ from those inputs, same shape and dtype;
- ``ts.bin``: float64 ``[rows]``, the time t each x_t was masked at;
- ``seeds.bin``: int64 ``[rows]``, the ε seed of each row (:func:`mdfast.diffusion.seeded_eps`);
- ``coupling.json``: the header, written last (its presence means the file is complete):
  ``format``, ``rows``, ``length``, ``dtype``, ``model_vocab_size``, ``mask_id``, ``tokenizer``,
  the ε stream, ``noise_dim`` / ``noise_scale`` and how the pairs were made (teacher, steps,
  perturbed, seed, source).

:class:`CouplingFile` gathers rows per batch from the maps: ``{"input_ids": x̂₀, "xt": x_t,
"t": t, "eps_seed": seed}``. :class:`CouplingWriter` creates the arrays (``.partial`` files that
several processes fill row ranges of) and finishes them by renaming and writing the header.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from mdfast.data.text.tokens import check_header
from mdfast.diffusion.imdm import EPS_STREAM_NAME

__all__ = ["COUPLING_FORMAT", "CouplingFile", "CouplingWriter", "read_coupling_header"]

COUPLING_FORMAT = "mdfast-coupling/1"
HEADER = "coupling.json"
_TOKEN_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
_ARRAYS = {"xT": None, "x0": None, "ts": np.float64, "seeds": np.int64}  # None: token dtype


def _token_dtype(vocab: int) -> str:
    return "uint16" if vocab <= 65536 else "uint32"


def _shapes(rows: int, length: int) -> dict:
    return {"xT": (rows, length), "x0": (rows, length), "ts": (rows,), "seeds": (rows,)}


def _dtypes(token_dtype: str) -> dict:
    return {k: np.dtype(_TOKEN_DTYPES[token_dtype] if v is None else v) for k, v in _ARRAYS.items()}


def read_coupling_header(path: str) -> dict:
    """The header of the coupling directory ``path``; a clear error when it is missing, was never
    completed or is not a coupling file."""
    hp = os.path.join(path, HEADER)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"mdfast: coupling directory '{path}' does not exist (make it with mdfast distill "
            "redi-data, or set data.path)"
        )
    if not os.path.exists(hp):
        if os.path.exists(os.path.join(path, "x0.bin.partial")):
            raise FileNotFoundError(
                f"mdfast: coupling '{path}' was never completed (an interrupted redi-data run); "
                "run it again"
            )
        raise FileNotFoundError(f"mdfast: '{path}' has no coupling header {HEADER}")
    with open(hp) as f:
        try:
            header = json.load(f)
        except ValueError as e:
            raise ValueError(f"mdfast: coupling header '{hp}' is not valid JSON ({e})") from None
    if header.get("format") != COUPLING_FORMAT:
        raise ValueError(
            f"mdfast: '{hp}' field 'format' is {header.get('format')!r}, expected "
            f"{COUPLING_FORMAT!r}"
        )
    for key in ("rows", "length", "dtype", "model_vocab_size", "mask_id"):
        if key not in header:
            raise ValueError(f"mdfast: coupling header '{hp}' has no field '{key}'")
    if header["dtype"] not in _TOKEN_DTYPES:
        raise ValueError(
            f"mdfast: coupling header '{hp}' field 'dtype' is {header['dtype']!r}; valid: "
            f"{list(_TOKEN_DTYPES)}"
        )
    return header


class CouplingFile:
    """The pairs of a coupling directory, memory-mapped (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path
        self.header = h = read_coupling_header(path)
        self.rows, self.length = int(h["rows"]), int(h["length"])
        self.vocab, self.mask_id = int(h["model_vocab_size"]), int(h["mask_id"])
        if self.rows <= 0:
            raise ValueError(f"mdfast: coupling '{path}' is empty (header field 'rows' = 0)")
        dtypes = _dtypes(h["dtype"])
        self.arrays = {}
        for name, shape in _shapes(self.rows, self.length).items():
            file = os.path.join(path, f"{name}.bin")
            if not os.path.exists(file):
                raise FileNotFoundError(f"mdfast: coupling array '{file}' is missing")
            want = int(np.prod(shape)) * dtypes[name].itemsize
            if os.path.getsize(file) != want:
                raise ValueError(
                    f"mdfast: '{file}' has {os.path.getsize(file)} bytes, the header (rows "
                    f"{self.rows}, length {self.length}, dtype {h['dtype']}) says {want}"
                )
            self.arrays[name] = np.memmap(file, dtype=dtypes[name], mode="r", shape=shape)

    def __len__(self) -> int:
        return self.rows

    def __repr__(self) -> str:
        return f"CouplingFile({self.path!r}, rows={self.rows}, length={self.length})"

    def __getitems__(self, idx) -> dict:
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.rows):
            raise IndexError(f"mdfast: row index out of range for {self!r}")
        a = self.arrays
        x0, xt = a["x0"][idx].astype(np.int64), a["xT"][idx].astype(np.int64)
        for name, rows in (("x0", x0), ("xT", xt)):
            if rows.size and int(rows.max()) >= self.vocab:
                raise ValueError(
                    f"mdfast: '{os.path.join(self.path, name + '.bin')}' holds token id "
                    f"{int(rows.max())} >= the vocabulary size {self.vocab}"
                )
        return {
            "input_ids": torch.from_numpy(x0),
            "xt": torch.from_numpy(xt),
            "t": torch.from_numpy(a["ts"][idx].astype(np.float64)),
            "eps_seed": torch.from_numpy(a["seeds"][idx].astype(np.int64)),
        }

    def __getitem__(self, i: int) -> dict:
        return {k: v[0] for k, v in self.__getitems__([int(i)]).items()}

    def check_compatible(
        self,
        *,
        vocab_size: int | None = None,
        mask_index: int | None = None,
        length: int | None = None,
        tokenizer: str | None = None,
        noise_dim: int | None = None,
    ) -> None:
        """Raise, naming the option, when the header disagrees with the run's settings (None:
        not checked)."""
        checks = [
            ("model_vocab_size", vocab_size, "model.vocab_size"),
            ("mask_id", mask_index, "objective.mask_index"),
            ("length", length, "data.length"),
            ("tokenizer", tokenizer, "data.tokenizer"),
        ]
        if "noise_dim" in self.header:  # couplings of an MDLM teacher have no ε
            checks.append(("noise_dim", noise_dim, "objective.noise_dim"))
            stream = self.header.get("eps_stream")
            if stream != EPS_STREAM_NAME:  # its seeds would regenerate other noise
                raise ValueError(
                    f"mdfast: coupling '{self.path}' (data.path) keys ε by {stream!r}, this "
                    f"version by {EPS_STREAM_NAME!r}; make the coupling again with mdfast "
                    "distill redi-data"
                )
        check_header(self.header, os.path.join(self.path, HEADER), checks, "the run",
                     "a coupling made for another model or data; make one for this preset with "
                     "mdfast distill redi-data, or override the option")  # fmt: skip


class CouplingWriter:
    """Creates the arrays of a coupling of ``rows`` × ``length`` as ``<name>.bin.partial`` (rank
    0, :meth:`create`), lets any process fill row ranges (:meth:`write`), and on :meth:`finish`
    (rank 0, after every writer is done) renames them and writes the header last."""

    def __init__(self, path: str, rows: int, length: int, model_vocab_size: int):
        self.path, self.rows, self.length = path, rows, length
        self.vocab = model_vocab_size
        self.dtype = _token_dtype(model_vocab_size)
        self.dtypes = _dtypes(self.dtype)
        self.shapes = _shapes(rows, length)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, f"{name}.bin.partial")

    def create(self, overwrite: bool = False) -> None:
        if os.path.exists(os.path.join(self.path, HEADER)) and not overwrite:
            raise FileExistsError(
                f"mdfast: coupling '{self.path}' already exists (set data.overwrite=true to "
                "replace it)"
            )
        os.makedirs(self.path, exist_ok=True)
        for name in ("coupling.json", *(f"{n}.bin" for n in self.shapes)):
            if os.path.exists(os.path.join(self.path, name)):
                os.remove(os.path.join(self.path, name))
        for name, shape in self.shapes.items():
            size = int(np.prod(shape)) * self.dtypes[name].itemsize
            with open(self._file(name), "wb") as f:
                f.truncate(size)

    def write(self, start: int, xt, x0, ts, seeds) -> None:
        """Rows ``[start, start + len(xt))`` of every array."""
        values = {"xT": xt, "x0": x0, "ts": ts, "seeds": seeds}
        n = len(xt)
        for name, v in values.items():
            v = v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            if name in ("xT", "x0") and v.size and (v.min() < 0 or v.max() >= self.vocab):
                raise ValueError(f"mdfast: coupling '{name}' rows hold ids outside [0, "
                                 f"{self.vocab})")  # fmt: skip
            mm = np.memmap(self._file(name), dtype=self.dtypes[name], mode="r+",
                           shape=self.shapes[name])  # fmt: skip
            mm[start : start + n] = v.astype(self.dtypes[name])
            mm.flush()
            del mm

    def finish(self, header: dict) -> dict:
        for name in self.shapes:
            with open(self._file(name), "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self._file(name), os.path.join(self.path, f"{name}.bin"))
        full = {"format": COUPLING_FORMAT, "rows": self.rows, "length": self.length,
                "dtype": self.dtype, "model_vocab_size": self.vocab, **header}  # fmt: skip
        hp = os.path.join(self.path, HEADER)
        with open(hp + ".tmp", "w") as f:
            json.dump(full, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(hp + ".tmp", hp)
        return full
