"""What the MDM-Prime experiment adds to the ``mdfast`` command: ``objective.name=prime``,
``model.name=prime_dit``, ``data.name=cifar10|imagenet32|digits8``, ``sample.sampler=prime`` and
the ``prime-*`` presets (called once by :func:`mdfast.experiments.registry.load_experiments`)."""

from __future__ import annotations

import inspect
from dataclasses import asdict

from mdfast.experiments.prime.presets import PRESETS
from mdfast.experiments.registry import (
    register_data,
    register_model,
    register_objective,
    register_presets,
    register_sample_runner,
)

__all__ = ["OBJECTIVE_DEFAULTS", "SAMPLE_DEFAULTS", "register"]


def _objective_defaults() -> dict:
    from mdfast.diffusion.prime_objective import PrimeObjective

    sig = inspect.signature(PrimeObjective.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k not in ("self", "model")}


OBJECTIVE_DEFAULTS = _objective_defaults()

# sample.* fields of sample.sampler=prime (on top of steps = nfe, batch_size, seed, out, ...)
SAMPLE_DEFAULTS = {
    "carry_over": False,
    "temperature_parameters": [1.0, 0.0, 0.0],
    "corrector_parameters": [],
    "timestep_parameters": [],
    "timestep_all_at_last": False,
    "num_samples": 64,
    "subtoken_index": [],
    "grid": True,
}


def _prime_objective(model, o: dict):
    from mdfast.diffusion.prime_objective import PrimeObjective

    return PrimeObjective(model, **o)


def _prime_dit_defaults(m: dict) -> dict:
    from mdfast.models.dit import DIT_PRESETS

    preset = m.get("preset", "small")
    if preset not in DIT_PRESETS:
        raise ValueError(f"mdfast: unknown model.preset '{preset}'; valid: {sorted(DIT_PRESETS)}")
    fields = asdict(DIT_PRESETS[preset])
    fields["vocab_size"] = 50257
    return {"preset": preset, "num_digits": 4, **fields}


def _prime_dit(m: dict):
    from mdfast.models.dit import DiTConfig
    from mdfast.models.prime_dit import PrimeDiT

    m = dict(m)
    ell = m.pop("num_digits")
    return PrimeDiT(DiTConfig(**m), num_digits=ell)


def _image_data(name: str):
    def load(d: dict):
        from mdfast.data.images import load_image_dataset

        return load_image_dataset(name, d["root"], "train"), load_image_dataset(
            name, d["root"], "eval"
        )

    return load


def _digits8(d: dict):
    from mdfast.experiments.prime.digits8 import load_digits8

    return load_digits8("train"), load_digits8("eval")


def _run_sample(cfg: dict, objective, checkpoint) -> int:
    from mdfast.experiments.prime.evaluation import run_sample

    return run_sample(cfg, objective, checkpoint)


def register() -> None:
    register_objective("prime", OBJECTIVE_DEFAULTS, _prime_objective)
    register_model("prime_dit", _prime_dit_defaults, _prime_dit)
    register_data("cifar10", {"root": ""}, _image_data("cifar10"))
    register_data("imagenet32", {"root": ""}, _image_data("imagenet32"))
    register_data("digits8", {}, _digits8)
    register_sample_runner("prime", SAMPLE_DEFAULTS, _run_sample)
    register_presets(PRESETS)
