"""IMDM's synthetic task (one random token repeated L = 10 times, V = 32): where a masked
diffusion model provably fails at one or two sampling steps and IMDM's distillation pipeline is
claimed to succeed.

- :mod:`~.data`: the ``synthetic-align`` data (registered as ``data.name=synthetic-align``);
- :mod:`~.presets`: ``imdm-synthetic-{mdlm,imdm,sdtt,imsdtt,imredi}``;
- :mod:`~.metrics`: all-equal fraction, first-token entropy, the ideal MDLM's all-equal rate;
- :mod:`~.pipeline`: MDLM → IMDM → SDTT / IM-SDTT (from 64 steps) → couplings → IM-ReDi and
  its ``ignore_seed`` / ``as_mdlm`` ablations, evaluated at 1 and 2 steps, one command:
  ``python -m mdfast.experiments.imdm_synthetic`` (``--scale tiny`` for a seconds-long check);
- :mod:`~.table`: the result table (Markdown, as in the README).
"""

from __future__ import annotations

__all__ = ["register"]


def _load(d: dict):
    from mdfast.experiments.imdm_synthetic.data import synthetic_align

    x = synthetic_align(d["n"] + d["val_n"], d["length"], d["vocab"], d["seed"])
    return x[: d["n"]], x[d["n"] :]


def register() -> None:
    from mdfast.experiments.imdm_synthetic.presets import PRESETS
    from mdfast.experiments.registry import register_data, register_presets

    register_data("synthetic-align", {"n": 10_000, "length": 10, "vocab": 32, "seed": 0,
                                      "val_n": 256}, _load)  # fmt: skip
    register_presets(PRESETS)
