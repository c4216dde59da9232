"""Backbone configs: a preset (or a given config) plus keyword overrides, as a fresh copy."""

from __future__ import annotations

import copy
import dataclasses

__all__ = ["configure"]


def configure(cls, config, presets: dict, overrides: dict, what: str):
    """A new ``cls`` instance: ``config`` (a ``cls``, a key of ``presets``, or None for the
    defaults) with ``overrides`` applied. The given config and the presets are never modified
    (a deep copy, so list fields are not shared either)."""
    if config is None:
        config = cls()
    elif isinstance(config, str):
        if config not in presets:
            raise ValueError(f"mdfast: unknown {what} preset '{config}'; valid: {sorted(presets)}")
        config = presets[config]
    elif not isinstance(config, cls):
        raise TypeError(
            f"mdfast: argument 'config' must be a {cls.__name__}, a preset name or None, "
            f"got {type(config).__name__}"
        )
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"mdfast: unknown {what} config field(s) {unknown}; valid: {sorted(valid)}")
    return dataclasses.replace(copy.deepcopy(config), **overrides)
