"""What a preset can name — models, objectives, datasets — and the presets themselves, in one set
of tables, filled by registration; and the lazy discovery of experiments.

Layering: the generic packages (ops, schedules, diffusion, sampling, models, train, metrics,
data) never import :mod:`mdfast.experiments`. What mdfast ships is registered by
:mod:`mdfast.experiments.builtin`; an experiment is a subpackage ``mdfast/experiments/<name>/``
exposing ``register()``, which calls :func:`register_model`, :func:`register_objective`,
:func:`register_data` and :func:`register_presets` for what it adds. Nothing imports an
experiment eagerly: the first lookup (a preset, a model/objective/data name) runs
:func:`load_experiments`, which registers the built-ins and then imports every experiment
subpackage and calls its ``register()`` once.

Tables (name → entry):

- ``MODELS``: ``(defaults(fields) -> every field, factory(fields) -> nn.Module)``; ``defaults``
  receives the model section as given (e.g. to read its ``preset``), ``factory`` the resolved
  fields without ``name`` and ``preset``;
- ``OBJECTIVES``: ``(default fields, factory(model, fields) -> objective)``;
- ``DATA``: ``(default fields, loader(fields) -> (train, validation))``;
- ``PRESETS``: raw presets (nested dicts, see :mod:`mdfast.experiments`);
- ``SAMPLERS``: objective name → :class:`mdfast.experiments.generation.SamplerEntry` (the
  samplers ``mdfast sample`` runs for that objective, see :func:`register_sampler`).
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Callable

__all__ = [
    "DATA",
    "MODELS",
    "OBJECTIVES",
    "PRESETS",
    "SAMPLERS",
    "ConfigError",
    "data_entry",
    "load_experiments",
    "model_entry",
    "objective_entry",
    "presets",
    "register_data",
    "register_model",
    "register_objective",
    "register_presets",
    "register_sampler",
    "sampler_entry",
]


class ConfigError(ValueError):
    """A preset, section, key or value that does not exist or does not parse."""


MODELS: dict[str, tuple[Callable[[dict], dict], Callable]] = {}
OBJECTIVES: dict[str, tuple[dict, Callable]] = {}
DATA: dict[str, tuple[dict, Callable]] = {}
PRESETS: dict[str, dict] = {}
SAMPLERS: dict[str, object] = {}

_loaded = False


def register_model(name: str, defaults: Callable[[dict], dict], factory: Callable) -> None:
    """Make ``model.name=<name>`` available: ``defaults(given_fields)`` returns every field (a
    ``ValueError`` becomes a :class:`ConfigError`), ``factory(fields)`` builds the model."""
    MODELS[name] = (defaults, factory)


def register_objective(name: str, defaults: dict, factory: Callable) -> None:
    """Make ``objective.name=<name>`` available: ``factory(model, fields)`` builds the objective
    from the resolved ``defaults`` (plus overrides); every field is overridable."""
    OBJECTIVES[name] = (dict(defaults), factory)


def register_data(name: str, defaults: dict, loader: Callable) -> None:
    """Make ``data.name=<name>`` available: ``loader(fields) -> (train, validation)`` datasets
    (tensors, dicts or tuples of tensors, or map-style datasets)."""
    DATA[name] = (dict(defaults), loader)


def register_presets(presets: dict[str, dict]) -> None:
    """Add raw presets (``{"model": {...}, "objective": {...}, ...}``) by name."""
    PRESETS.update(presets)


def register_sampler(objective: str, entry) -> None:
    """Make ``mdfast sample`` run ``objective``'s checkpoints: ``entry`` is a
    :class:`mdfast.experiments.generation.SamplerEntry` (its sampler names, the default one and
    ``run(job, given, indices) -> SampleResult``). A later registration for the same objective
    replaces the earlier one."""
    SAMPLERS[objective] = entry


def load_experiments() -> None:
    """Register the built-ins, then every experiment subpackage's ``register()``; once."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # before loading: a register() that looks something up must not recurse
    from mdfast.experiments import builtin

    builtin.register()
    package = importlib.import_module("mdfast.experiments")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg:
            continue
        name = f"mdfast.experiments.{info.name}"
        try:
            module = importlib.import_module(name)
        except ImportError as e:  # an experiment's optional dependency missing
            warnings.warn(f"mdfast: experiment {name} not loaded: {e}", RuntimeWarning, 2)
            continue
        register = getattr(module, "register", None)
        if callable(register):
            register()


def _entry(table: dict, name: str, what: str):
    load_experiments()
    if name not in table:
        raise ConfigError(f"mdfast: unknown {what} '{name}'; valid: {sorted(table)}")
    return table[name]


def model_entry(name: str) -> tuple[Callable[[dict], dict], Callable]:
    return _entry(MODELS, name, "model.name")


def objective_entry(name: str) -> tuple[dict, Callable]:
    return _entry(OBJECTIVES, name, "objective.name")


def data_entry(name: str) -> tuple[dict, Callable]:
    return _entry(DATA, name, "data.name")


def sampler_entry(objective: str):
    load_experiments()
    if objective not in SAMPLERS:
        raise ConfigError(
            f"mdfast: objective '{objective}' has no sampler registered for mdfast sample; "
            f"objectives with one: {sorted(SAMPLERS)}"
        )
    return SAMPLERS[objective]


def presets() -> dict[str, dict]:
    """Every registered preset (built-ins and experiments)."""
    load_experiments()
    return PRESETS
