"""Builders from a resolved config (see :mod:`mdfast.experiments`) to model, objective and data,
through the registries of :mod:`mdfast.experiments.registry` (no builder knows any experiment).

``register_objective`` / ``register_data`` (and ``register_model``) are re-exported here, where
they were first documented, with the registries ``OBJECTIVES`` and ``DATA`` (filled on the
first lookup) and ``OBJECTIVE_DEFAULTS`` (name → default fields).
"""

from __future__ import annotations

from types import MappingProxyType

from mdfast.experiments import registry
from mdfast.experiments.registry import (
    DATA,
    OBJECTIVES,
    register_data,
    register_model,
    register_objective,
)

__all__ = [
    "DATA",
    "OBJECTIVES",
    "OBJECTIVE_DEFAULTS",  # noqa: F822 (module __getattr__)
    "build_data",
    "build_model",
    "build_objective",
    "register_data",
    "register_model",
    "register_objective",
]


def build_model(m: dict):
    """The model of a resolved ``model`` section (``name`` picks the registered factory)."""
    _, factory = registry.model_entry(m["name"])
    # random_init is a CLI switch (eval/sample without a checkpoint), not a model field
    return factory({k: v for k, v in m.items() if k not in ("name", "preset", "random_init")})


def build_objective(o: dict, model):
    """The objective of a resolved ``objective`` section around ``model``."""
    o = dict(o)
    _, factory = registry.objective_entry(o.pop("name"))
    if "mask_index" in o and o["mask_index"] < 0:
        raise ValueError("mdfast: set objective.mask_index (the mask token id)")
    return factory(model, o)


def build_data(d: dict):
    """(train, validation) datasets of a resolved ``data`` section."""
    _, loader = registry.data_entry(d["name"])
    return loader(d)


def __getattr__(name: str):
    if name == "OBJECTIVE_DEFAULTS":  # name -> default fields, of every registered objective
        registry.load_experiments()
        return MappingProxyType({k: v[0] for k, v in registry.OBJECTIVES.items()})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
