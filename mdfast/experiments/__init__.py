"""Experiment presets, kept in one place, and the ``key=value`` override mechanism.

A preset is a nested dict with sections ``model``, ``objective``, ``data``, ``train`` and
``eval`` (see :mod:`mdfast.experiments.text` and :mod:`mdfast.experiments.image`). Each section
names a builder (``name``) and lists its fields; :func:`resolve` fills every field the builder
accepts with its default, so ``mdfast train <preset> --print-config`` shows every field and every
field can be overridden with a dotted ``section.field=value`` argument. Values are parsed to the
type of the field's default (``true``/``false`` for bools, JSON/Python literals for lists,
``null`` / ``None`` for none). A ``*.preset`` / ``*.name`` override is applied before defaults
are filled, so ``model.preset=small`` switches the whole architecture and later overrides patch it.

Why not Hydra/OmegaConf (MDLM's convention)? The same dotted ``key=value`` syntax without the
dependency or its working-directory side effects; presets are plain Python you can import.
"""

from __future__ import annotations

import ast
import copy
import json
from dataclasses import asdict, fields

from mdfast.experiments import image, mnist, text, text_data

__all__ = ["PRESETS", "ConfigError", "apply_overrides", "get", "preset_names", "resolve"]

PRESETS: dict[str, dict] = {**text.PRESETS, **image.PRESETS, **mnist.PRESETS}
mnist.register()
text_data.register()

SECTIONS = ("model", "objective", "data", "train", "eval", "sample")


class ConfigError(ValueError):
    pass


def preset_names() -> list[str]:
    return sorted(PRESETS)


# --- defaults per builder ----------------------------------------------------------------------


def _model_defaults(m: dict) -> dict:
    name = m.get("name", "dit")
    if name == "dit":
        from mdfast.models.dit import DIT_PRESETS

        preset = m.get("preset", "small")
        if preset not in DIT_PRESETS:
            raise ConfigError(
                f"mdfast: unknown model.preset '{preset}'; valid: {sorted(DIT_PRESETS)}"
            )
        return {
            "name": "dit",
            "preset": preset,
            "causal": False,
            "init_from": "",
            **asdict(DIT_PRESETS[preset]),
        }
    if name in ("unet", "uvit"):
        from mdfast.models import UNET_PRESETS, UVIT_PRESETS

        table = UNET_PRESETS if name == "unet" else UVIT_PRESETS
        preset = m.get("preset", next(iter(table)))
        if preset not in table:
            raise ConfigError(f"mdfast: unknown model.preset '{preset}'; valid: {sorted(table)}")
        return {"name": name, "preset": preset, **asdict(table[preset])}
    if name == "mnist_unet":
        try:
            return mnist.model_defaults(m)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    raise ConfigError(
        f"mdfast: unknown model.name '{name}'; valid: ['dit', 'mnist_unet', 'unet', 'uvit']"
    )


def _objective_defaults(o: dict) -> dict:
    from mdfast.experiments.build import OBJECTIVE_DEFAULTS

    name = o.get("name", "mdlm")
    if name not in OBJECTIVE_DEFAULTS:
        raise ConfigError(
            f"mdfast: unknown objective.name '{name}'; valid: {sorted(OBJECTIVE_DEFAULTS)}"
        )
    return {"name": name, **OBJECTIVE_DEFAULTS[name]}


def _data_defaults(d: dict) -> dict:
    from mdfast.experiments.build import DATA

    name = d.get("name", "synthetic-text")
    if name not in DATA:
        raise ConfigError(f"mdfast: unknown data.name '{name}'; valid: {sorted(DATA)}")
    return {"name": name, **DATA[name][0]}


def _train_defaults(_: dict) -> dict:
    from mdfast.train.trainer import TrainConfig

    return {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}


def _eval_defaults(_: dict) -> dict:
    # sequences: 0 = the whole split; K: time samples per sequence (MDLM's low-discrepancy
    # lattice); T: -1 = the objective's T (0 continuous time); datasets: prepared directories
    # or corpus names under data_root ("zero-shot" = MDLM's zero-shot sets), empty = the run's
    # validation split; precision: auto = bf16 autocast on CUDA, fp32 on CPU
    return {"ckpt": "", "batch_size": 16, "use_ema": True, "seed": 0, "sequences": 0, "K": 1,
            "T": -1, "datasets": [], "data_root": "data/text", "split": "validation",
            "precision": "auto", "out": ""}  # fmt: skip


def _sample_defaults(_: dict) -> dict:
    return {"ckpt": "", "sampler": "ddpm_cache", "steps": 128, "batch_size": 4, "length": 0,
            "seed": 0, "schedule": "", "temperature": 1.0, "top_p": 1.0, "top_k": 0,
            "noise_removal": True, "use_ema": True, "out": "", "precision": "auto",
            # ReMDM (eta < 0: the strategy's default), semi-AR windows, repeated batches
            "eta": -1.0, "t_on": 0.55, "t_off": 0.05, "alpha_on": 0.9,
            "semi_ar": False, "stride_length": 0, "num_strides": 0, "num_batches": 1}  # fmt: skip


_DEFAULTS = {
    "model": _model_defaults,
    "objective": _objective_defaults,
    "data": _data_defaults,
    "train": _train_defaults,
    "eval": _eval_defaults,
    "sample": _sample_defaults,
}


def resolve(raw: dict) -> dict:
    """Fill every field of every section with its builder's default; reject unknown keys."""
    for k in raw:
        if k not in SECTIONS:
            raise ConfigError(f"mdfast: unknown config section '{k}'; valid: {list(SECTIONS)}")
    out = {}
    for sec in SECTIONS:
        given = dict(raw.get(sec, {}))
        full = _DEFAULTS[sec](given)
        if sec == "model":  # eval/sample refuse to run without a checkpoint unless this is set
            full.setdefault("random_init", False)
        for k, v in given.items():
            if k not in full:
                raise ConfigError(
                    f"mdfast: unknown config key '{sec}.{k}'; valid keys in '{sec}': {sorted(full)}"
                )
            full[k] = v
        out[sec] = full
    return out


def get(name: str) -> dict:
    """The raw (unresolved) preset ``name``."""
    if name not in PRESETS:
        raise ConfigError(f"mdfast: unknown preset '{name}'; valid presets: {preset_names()}")
    return copy.deepcopy(PRESETS[name])


# --- overrides ---------------------------------------------------------------------------------


def _parse(text: str, like):
    if isinstance(like, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"mdfast: expected a bool, got '{text}'")
    if text.strip().lower() in ("null", "none"):
        return None
    if isinstance(like, int):
        return int(text)
    if isinstance(like, float):
        return float(text)
    if isinstance(like, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text


def _split(item: str) -> tuple[list[str], str]:
    if "=" not in item:
        raise ConfigError(f"mdfast: override '{item}' is not of the form section.key=value")
    key, value = item.split("=", 1)
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Resolve ``raw`` with ``overrides`` (``["train.steps=10", ...]``) applied."""
    raw = copy.deepcopy(raw)
    parsed = [_split(o) for o in overrides]
    # selectors first: they change which defaults apply
    for path, value in parsed:
        if len(path) == 2 and path[1] in ("preset", "name") and path[0] in SECTIONS:
            sec = raw.setdefault(path[0], {})
            sec[path[1]] = value
            if path[1] == "name":  # a new builder: drop fields of the old one
                raw[path[0]] = {"name": value}
    cfg = resolve(raw)
    for path, value in parsed:
        if len(path) == 2 and path[1] in ("preset", "name") and path[0] in SECTIONS:
            continue
        if len(path) != 2 or path[0] not in SECTIONS:
            if path[0] not in SECTIONS:
                raise ConfigError(
                    f"mdfast: unknown config section '{path[0]}'; valid: {list(SECTIONS)}"
                )
            raise ConfigError(f"mdfast: override key '{'.'.join(path)}' must be section.field")
        sec, key = path
        if key not in cfg[sec]:
            raise ConfigError(
                f"mdfast: unknown config key '{sec}.{key}'; valid keys in '{sec}': "
                f"{sorted(cfg[sec])}"
            )
        try:
            cfg[sec][key] = _parse(value, cfg[sec][key])
        except (ValueError, TypeError) as e:
            raise ConfigError(f"mdfast: bad value for '{sec}.{key}': {value!r} ({e})") from e
    return cfg
