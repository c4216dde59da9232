"""Experiment presets and the ``key=value`` override mechanism.

A preset is a nested dict with sections ``model``, ``objective``, ``data``, ``train``, ``eval``
and ``sample`` (see :mod:`mdfast.experiments.text`, :mod:`mdfast.experiments.image` and each
experiment's own presets, e.g. :mod:`mdfast.experiments.mnist.presets`). Each section names a
builder (``name``, looked up in :mod:`mdfast.experiments.registry`) and lists its fields;
:func:`resolve` fills every field the builder accepts with its default, so ``mdfast train <preset>
--print-config`` shows every field and every field can be overridden with a dotted
``section.field=value`` argument. Values are parsed to the type of the field's default
(``true``/``false`` for bools, JSON/Python literals for lists, ``null`` / ``None`` for none).
A ``*.preset`` / ``*.name`` override is applied before defaults are filled, so
``model.preset=small`` switches the whole architecture and later overrides patch it.

Layout of this package: :mod:`~mdfast.experiments.registry` (the name → builder tables and the
lazy discovery of experiments), :mod:`~mdfast.experiments.builtin` (what mdfast ships),
:mod:`~mdfast.experiments.build` (config → model, objective, data), and one subpackage per
experiment (``mnist/``) that registers what it adds. The generic packages of mdfast never import
this package.

Why not Hydra/OmegaConf (MDLM's convention)? The same dotted ``key=value`` syntax without the
dependency or its working-directory side effects; presets are plain Python you can import.
"""

from __future__ import annotations

import ast
import copy
import json
from dataclasses import fields

from mdfast.experiments import registry
from mdfast.experiments.registry import ConfigError

__all__ = ["PRESETS", "ConfigError", "apply_overrides", "get", "preset_names", "resolve"]

SECTIONS = ("model", "objective", "data", "train", "eval", "sample")


def __getattr__(name: str):
    if name == "PRESETS":  # every preset, once the experiments are registered
        return registry.presets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def preset_names() -> list[str]:
    return sorted(registry.presets())


# --- defaults per builder ----------------------------------------------------------------------


def _model_defaults(m: dict) -> dict:
    name = m.get("name", "dit")
    defaults, _ = registry.model_entry(name)
    try:
        return {"name": name, **defaults(m)}
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _objective_defaults(o: dict) -> dict:
    name = o.get("name", "mdlm")
    return {"name": name, **registry.objective_entry(name)[0]}


def _data_defaults(d: dict) -> dict:
    name = d.get("name", "synthetic-text")
    return {"name": name, **registry.data_entry(name)[0]}


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


def _sample_defaults(given: dict) -> dict:
    # sampler: "" = the objective's default; preset: a named sampler setting
    # (generation.SAMPLER_PRESETS, the ReMDM paper's), applied before the other sample.* keys;
    # num_samples: 0 = batch_size x num_batches; out: the JSONL file (resumed when it exists)
    out = {"ckpt": "", "preset": "", "sampler": "", "steps": 128, "batch_size": 4, "length": 0,
           "num_samples": 0, "seed": 0, "schedule": "", "temperature": 1.0, "top_p": 1.0,
           "top_k": 0, "nucleus": "remdm", "noise_removal": True, "use_ema": True, "out": "",
           "overwrite": False, "precision": "auto", "progress": True,
           # ReMDM (eta < 0: the strategy's default), semi-AR windows, repeated batches
           "eta": -1.0, "t_on": 0.55, "t_off": 0.05, "alpha_on": 0.9,
           "semi_ar": False, "stride_length": 0, "num_strides": 0, "num_batches": 1,
           # AR: KV-cached incremental decoding
           "kv_cache": True,
           # conditioning: a prompt (prefix), an infix at a position, or prefixes of
           # prefix_len tokens from a prepared split, cond_repeats samples per prefix
           "prompt": "", "infix": "", "infix_at": -1, "cond_data": "",
           "cond_split": "validation", "prefix_len": 0, "cond_repeats": 1,
           # discrete interpolants (sampler euler | maskgit): guidance scale, the class of
           # every sample (-1: classes 0, 1, ... in turn), text embeddings [N, T, C] (.npy, or
           # .npz member context; sample i gets row i mod N), kappa ("" = the objective's), the
           # Euler and MaskGIT options of mdfast.sampling.interpolant (null = "none")
           "cfg_scale": 1.0, "label": -1, "context": "", "kappa": "", "t_min": 0.0,
           "max_last": False, "anneal_noise": None, "reveal": "linear", "randomize": "linear",
           "r_temp": 4.5}  # fmt: skip
    name = given.get("preset") or ""
    if name:
        from mdfast.experiments.generation import SAMPLER_PRESETS

        if name not in SAMPLER_PRESETS:
            raise ConfigError(
                f"mdfast: unknown sample.preset '{name}'; valid: {sorted(SAMPLER_PRESETS)}"
            )
        out.update(SAMPLER_PRESETS[name], preset=name)
    return out


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
    presets = registry.presets()
    if name not in presets:
        raise ConfigError(f"mdfast: unknown preset '{name}'; valid presets: {preset_names()}")
    return copy.deepcopy(presets[name])


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
