"""Builders from a resolved config (see :mod:`mdfast.experiments`) to model, objective, data."""

from __future__ import annotations

from mdfast.experiments.data import load_tokens, synthetic_grid, synthetic_text

__all__ = [
    "DATA",
    "OBJECTIVES",
    "OBJECTIVE_DEFAULTS",
    "build_data",
    "build_model",
    "build_objective",
    "register_data",
    "register_objective",
]

_DIFF = {"antithetic": True, "sampling_eps": 1e-3, "schedule": "loglinear"}


def _mdlm(model, o):
    from mdfast.diffusion import MDLM

    return MDLM(model, **o)


def _sedd(model, o):
    from mdfast.diffusion import SEDD

    return SEDD(model, **o)


def _ar(model, o):
    from mdfast.diffusion import AR

    return AR(model, **o)


def _imdm(model, o):
    from mdfast.diffusion import IMDM

    return IMDM(model, **{**o, "noise_dim": o["noise_dim"] or None})


def _interpolant(model, o):
    from mdfast.diffusion import Interpolant

    return Interpolant(model, **o)


# name -> (default fields, factory(model, fields) -> objective). Other modules add theirs with
# register_objective (e.g. the Prime objective), and every field becomes overridable.
OBJECTIVES: dict[str, tuple[dict, object]] = {
    "mdlm": ({"mask_index": -1, "T": 0, "fused": False, **_DIFF}, _mdlm),
    "sedd": ({"mask_index": -1, "fused": False, **_DIFF}, _sedd),
    "ar": ({"exclude_index": -1, "fused": False}, _ar),
    "imdm": (
        {"mask_index": -1, "T": 0, "fused": False, "noise_dim": 0, "noise_scale": 1.0, **_DIFF},
        _imdm,
    ),
    "interpolant": (
        {"mask_index": -1, "kappa": "linear", "t_min": 1e-3, "p_uncond": 0.1, "num_classes": 0},
        _interpolant,
    ),
}
OBJECTIVE_DEFAULTS = {k: v[0] for k, v in OBJECTIVES.items()}  # a view kept in sync below


def register_objective(name: str, defaults: dict, factory) -> None:
    """Make ``objective.name=<name>`` available to presets and the CLI: ``factory(model,
    fields)`` builds the objective from the resolved ``defaults`` (plus overrides)."""
    OBJECTIVES[name] = (dict(defaults), factory)
    OBJECTIVE_DEFAULTS[name] = dict(defaults)


def build_model(m: dict):
    m = dict(m)
    name = m.pop("name")
    m.pop("preset", None)
    m.pop("random_init", None)  # a CLI switch (eval/sample without a checkpoint), not a field
    if name == "dit":
        from mdfast.models.dit import DiT, DiTConfig

        causal = m.pop("causal")
        init_from = m.pop("init_from")
        if init_from:
            from mdfast.models.published import load_pretrained

            return load_pretrained(init_from, DiTConfig(**m), causal=causal)
        return DiT(DiTConfig(**m), causal=causal)
    if name == "unet":
        from mdfast.models.unet import UNet, UNetConfig

        return UNet(UNetConfig(**m))
    if name == "uvit":
        from mdfast.models.uvit import UViT, UViTConfig

        return UViT(UViTConfig(**m))
    if name == "mnist_unet":
        from mdfast.experiments.mnist import model_from_fields

        return model_from_fields(m)
    raise ValueError(f"mdfast: unknown model.name '{name}'")


def build_objective(o: dict, model):
    o = dict(o)
    name = o.pop("name")
    if name not in OBJECTIVES:
        raise ValueError(f"mdfast: unknown objective.name '{name}'; valid: {sorted(OBJECTIVES)}")
    if "mask_index" in o and o["mask_index"] < 0:
        raise ValueError("mdfast: set objective.mask_index (the mask token id)")
    return OBJECTIVES[name][1](model, o)


def _split_rows(data, n_train: int):
    if isinstance(data, dict):
        return {k: v[:n_train] for k, v in data.items()}, {k: v[n_train:] for k, v in data.items()}
    return data[:n_train], data[n_train:]


def _rows(data) -> int:
    return len(data["input_ids"]) if isinstance(data, dict) else len(data)


def _synthetic_grid(d):
    kw = {k: d[k] for k in ("size", "vocab", "classes", "seed")}
    return _split_rows(synthetic_grid(d["n"] + d["val_n"], **kw), d["n"])


def _synthetic_text(d):
    kw = {k: d[k] for k in ("length", "vocab", "seed")}
    return _split_rows(synthetic_text(d["n"] + d["val_n"], **kw), d["n"])


def _tokens(d):
    train = load_tokens(d["path"])
    if d["val_path"]:
        return train, load_tokens(d["val_path"])
    n_val = max(1, int(_rows(train) * d["val_fraction"]))
    return _split_rows(train, _rows(train) - n_val)


# name -> (default fields, loader(fields) -> (train, validation))
DATA: dict[str, tuple[dict, object]] = {
    "synthetic-text": (
        {"n": 512, "length": 32, "vocab": 32, "seed": 0, "val_n": 64},
        _synthetic_text,
    ),
    "synthetic-grid": (
        {"n": 256, "size": 8, "vocab": 8, "classes": 4, "seed": 0, "val_n": 64},
        _synthetic_grid,
    ),
    "tokens": ({"path": "", "val_path": "", "val_fraction": 0.01}, _tokens),
}


def register_data(name: str, defaults: dict, loader) -> None:
    """Make ``data.name=<name>`` available: ``loader(fields) -> (train, validation)`` datasets
    (tensors, dicts of tensors or map-style datasets)."""
    DATA[name] = (dict(defaults), loader)


def build_data(d: dict):
    """(train, validation) datasets: token tensors or dicts of tensors."""
    if d["name"] not in DATA:
        raise ValueError(f"mdfast: unknown data.name '{d['name']}'; valid: {sorted(DATA)}")
    return DATA[d["name"]][1](d)
