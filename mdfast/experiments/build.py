"""Builders from a resolved config (see :mod:`mdfast.experiments`) to model, objective, data."""

from __future__ import annotations

from mdfast.experiments.data import load_tokens, synthetic_grid, synthetic_text

__all__ = ["OBJECTIVE_DEFAULTS", "build_data", "build_model", "build_objective"]

_DIFF = {"antithetic": True, "sampling_eps": 1e-3, "schedule": "loglinear"}
OBJECTIVE_DEFAULTS: dict[str, dict] = {
    "mdlm": {"mask_index": -1, "T": 0, "fused": False, **_DIFF},
    "sedd": {"mask_index": -1, **_DIFF},
    "ar": {},
    "imdm": {"mask_index": -1, "T": 0, "fused": False, "noise_dim": 0, "noise_scale": 1.0, **_DIFF},
    "interpolant": {
        "mask_index": -1,
        "kappa": "linear",
        "t_min": 1e-3,
        "p_uncond": 0.1,
        "num_classes": 0,
    },
}


def build_model(m: dict):
    m = dict(m)
    name = m.pop("name")
    m.pop("preset", None)
    if name == "dit":
        from mdfast.models.dit import DiT, DiTConfig, load_mdlm

        causal = m.pop("causal")
        init_from = m.pop("init_from")
        if init_from:
            model = load_mdlm(init_from, DiTConfig(**m))
            model.causal = causal
            for b in model.blocks:
                b.causal = causal
            return model
        return DiT(DiTConfig(**m), causal=causal)
    if name == "unet":
        from mdfast.models.unet import UNet, UNetConfig

        return UNet(UNetConfig(**m))
    if name == "uvit":
        from mdfast.models.uvit import UViT, UViTConfig

        return UViT(UViTConfig(**m))
    raise ValueError(f"mdfast: unknown model.name '{name}'")


def build_objective(o: dict, model):
    from mdfast import diffusion as D

    o = dict(o)
    name = o.pop("name")
    if "mask_index" in o and o["mask_index"] < 0:
        raise ValueError("mdfast: set objective.mask_index (the mask token id)")
    if name == "mdlm":
        return D.MDLM(model, **o)
    if name == "sedd":
        return D.SEDD(model, **o)
    if name == "ar":
        return D.AR(model)
    if name == "imdm":
        o["noise_dim"] = o["noise_dim"] or None
        return D.IMDM(model, **o)
    if name == "interpolant":
        return D.Interpolant(model, **o)
    raise ValueError(f"mdfast: unknown objective.name '{name}'")


def _split_rows(data, n_train: int):
    if isinstance(data, dict):
        return {k: v[:n_train] for k, v in data.items()}, {k: v[n_train:] for k, v in data.items()}
    return data[:n_train], data[n_train:]


def _rows(data) -> int:
    return len(data["input_ids"]) if isinstance(data, dict) else len(data)


def build_data(d: dict):
    """(train, validation) datasets: token tensors or dicts of tensors."""
    name = d["name"]
    if name == "synthetic-grid":
        kw = {k: d[k] for k in ("size", "vocab", "classes", "seed")}
        return _split_rows(synthetic_grid(d["n"] + d["val_n"], **kw), d["n"])
    if name == "synthetic-text":
        kw = {k: d[k] for k in ("length", "vocab", "seed")}
        full = synthetic_text(d["n"] + d["val_n"], **kw)
        return full[: d["n"]], full[d["n"] :]
    if name == "tokens":
        train = load_tokens(d["path"])
        if d["val_path"]:
            return train, load_tokens(d["val_path"])
        n_val = max(1, int(_rows(train) * d["val_fraction"]))
        return _split_rows(train, _rows(train) - n_val)
    raise ValueError(f"mdfast: unknown data.name '{name}'")
