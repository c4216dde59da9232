"""What the interpolant experiment adds to the ``mdfast`` command: ``data.name=vq-tokens``
(pre-tokenised VQ index grids, :func:`mdfast.data.vq_tokens.load_vq_tokens`),
``data.name=digits14`` (the 14×14, 16-level MNIST tokens) and the ``interpolant-*`` presets."""

from __future__ import annotations

from mdfast.data.vq_tokens import MappedArray, load_vq_tokens
from mdfast.experiments.interpolants.digits import load_digit_tokens
from mdfast.experiments.interpolants.presets import PRESETS
from mdfast.experiments.registry import register_data, register_presets

__all__ = ["register"]


def _split(cols: dict, n_val: int) -> tuple[dict, dict]:
    """The last ``n_val`` rows as validation; memory-mapped columns stay lazy views."""
    cut = len(cols["input_ids"]) - n_val

    def rows(v, a, b):
        return v.split(a, b) if isinstance(v, MappedArray) else v[a:b]

    n = len(cols["input_ids"])
    train = {k: rows(v, 0, cut) for k, v in cols.items()}
    return train, {k: rows(v, cut, n) for k, v in cols.items()}


def _vq_tokens(d: dict):
    def cols(path, labels, context):
        return load_vq_tokens(path, codebook_size=d["codebook_size"], labels_path=labels or None,
                              context_path=context or None)  # fmt: skip

    if not d["path"]:
        raise FileNotFoundError(
            "mdfast: set data.path=... to a VQ token file (.npz with input_ids [N, h, w] and "
            "label / context, or .npy); python -m mdfast.experiments.interpolants.tokenize "
            "writes one from an image folder"
        )
    train = cols(d["path"], d["labels_path"], d["context_path"])
    if d["val_path"]:
        return train, cols(d["val_path"], d["val_labels_path"], d["val_context_path"])
    n = len(train["input_ids"])
    return _split(train, max(1, int(n * d["val_fraction"])) if n > 1 else 0)


def _digits14(d: dict):
    train, test, _ = load_digit_tokens(data=d["source"], levels=d["levels"], seed=d["seed"])
    return train, test


def register() -> None:
    register_data(
        "vq-tokens",
        {"path": "", "codebook_size": 16384, "labels_path": "", "context_path": "",
         "val_path": "", "val_labels_path": "", "val_context_path": "", "val_fraction": 0.01},
        _vq_tokens,
    )  # fmt: skip
    register_data("digits14", {"source": "shipped", "levels": 16, "seed": 0}, _digits14)
    register_presets(PRESETS)
