"""What the MNIST experiment adds to the ``mdfast`` command: ``model.name=mnist_unet``,
``objective.name=mnist_baseline|mnist_naive|mnist_ambient``, ``data.name=mnist`` and the
``mnist-*`` presets (called once by :func:`mdfast.experiments.registry.load_experiments`)."""

from __future__ import annotations

from mdfast.experiments.mnist.data import training_data
from mdfast.experiments.mnist.model import MODEL_PRESETS, MNISTUNet
from mdfast.experiments.mnist.objectives import AmbientMDLM, MDLMBaseline, NaiveCorrupted
from mdfast.experiments.mnist.presets import PRESETS
from mdfast.experiments.registry import (
    register_data,
    register_model,
    register_objective,
    register_presets,
)

__all__ = ["model_defaults", "model_from_fields", "register"]


def model_defaults(m: dict) -> dict:
    """Every field of ``model.name=mnist_unet`` (but the name) for a ``model.preset`` of
    :data:`~mdfast.experiments.mnist.model.MODEL_PRESETS`."""
    preset = m.get("preset", "small")
    if preset not in MODEL_PRESETS:
        raise ValueError(f"mdfast: unknown model.preset '{preset}'; valid: {sorted(MODEL_PRESETS)}")
    cfg = dict(MODEL_PRESETS[preset])
    cfg["mults"] = list(cfg["mults"])
    return {"preset": preset, "dropout": 0.0, **cfg}


def model_from_fields(m: dict) -> MNISTUNet:
    fields = {k: v for k, v in m.items() if k not in ("name", "preset")}
    fields["mults"] = tuple(fields["mults"])
    return MNISTUNet(**fields)


def _load_data(d: dict):
    """(train, validation) as dicts: ``input_ids`` (+ ``observed`` when corrupted) and ``label``."""
    experiment = "baseline" if d["masked_fraction"] == 0 else "ambient"
    kw = {"masked_fraction": d["masked_fraction"], "data": d["source"], "seed": d["seed"]}
    out = []
    for train in (True, False):
        parts = training_data(experiment, train=train, **kw)
        keys = (
            ("input_ids", "label")
            if experiment == "baseline"
            else ("input_ids", "observed", "label")
        )
        out.append(dict(zip(keys, parts, strict=True)))
    return tuple(out)


def register() -> None:
    register_model("mnist_unet", model_defaults, model_from_fields)
    register_objective("mnist_baseline", {}, lambda model, o: MDLMBaseline(model))
    register_objective("mnist_naive", {}, lambda model, o: NaiveCorrupted(model))
    register_objective(
        "mnist_ambient",
        {
            "consistency_weight": 1.0,
            "role": "student",
            "inner_steps": 4,
            "divergence": "brier",
            "subsample": 2,
            "step_back": 0.1,
        },
        lambda model, o: AmbientMDLM(model, **o),
    )
    register_data("mnist", {"source": "shipped", "masked_fraction": 0.0, "seed": 0}, _load_data)
    register_presets(PRESETS)
