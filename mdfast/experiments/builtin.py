"""What mdfast ships, registered by name: the backbones of :mod:`mdfast.models` (``dit``,
``unet``, ``uvit``), the objectives of :mod:`mdfast.diffusion` (``mdlm``, ``sedd``, ``ar``,
``imdm``, ``interpolant``), the synthetic and on-disk token datasets of
:mod:`mdfast.experiments.data`, the prepared text files of :mod:`mdfast.experiments.text_data`
(``text``), and the text and image presets (:mod:`mdfast.experiments.text`,
:mod:`mdfast.experiments.image`). Experiments add theirs from
their own subpackage (see :mod:`mdfast.experiments.registry`)."""

from __future__ import annotations

from dataclasses import asdict

from mdfast.experiments import image, text, text_data, text_samplers
from mdfast.experiments.data import load_tokens, synthetic_grid, synthetic_text
from mdfast.experiments.registry import (
    register_data,
    register_model,
    register_objective,
    register_presets,
    register_sampler,
)

__all__ = ["register"]


# --- models ------------------------------------------------------------------------------------


def _preset_fields(table: dict, given: dict, default: str) -> tuple[str, dict]:
    preset = given.get("preset", default)
    if preset not in table:
        raise ValueError(f"mdfast: unknown model.preset '{preset}'; valid: {sorted(table)}")
    return preset, asdict(table[preset])


def _dit_defaults(m: dict) -> dict:
    from mdfast.models.dit import DIT_PRESETS

    preset, fields = _preset_fields(DIT_PRESETS, m, "small")
    return {"preset": preset, "causal": False, "init_from": "", **fields}


def _dit(m: dict):
    from mdfast.models.dit import DiT, DiTConfig

    m = dict(m)
    causal = m.pop("causal")
    init_from = m.pop("init_from")
    if init_from:  # published MDLM / SEDD / AR weights in their own layouts
        from mdfast.models.published import load_pretrained

        return load_pretrained(init_from, DiTConfig(**m), causal=causal)
    return DiT(DiTConfig(**m), causal=causal)


def _unet_defaults(m: dict) -> dict:
    from mdfast.models.unet import UNET_PRESETS

    preset, fields = _preset_fields(UNET_PRESETS, m, next(iter(UNET_PRESETS)))
    return {"preset": preset, **fields}


def _unet(m: dict):
    from mdfast.models.unet import UNet, UNetConfig

    return UNet(UNetConfig(**m))


def _uvit_defaults(m: dict) -> dict:
    from mdfast.models.uvit import UVIT_PRESETS

    preset, fields = _preset_fields(UVIT_PRESETS, m, next(iter(UVIT_PRESETS)))
    return {"preset": preset, **fields}


def _uvit(m: dict):
    from mdfast.models.uvit import UViT, UViTConfig

    return UViT(UViTConfig(**m))


# --- objectives --------------------------------------------------------------------------------

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


# --- data --------------------------------------------------------------------------------------


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


def register() -> None:
    register_model("dit", _dit_defaults, _dit)
    register_model("unet", _unet_defaults, _unet)
    register_model("uvit", _uvit_defaults, _uvit)

    register_objective("mdlm", {"mask_index": -1, "T": 0, "fused": False, **_DIFF}, _mdlm)
    register_objective("sedd", {"mask_index": -1, "fused": False, **_DIFF}, _sedd)
    register_objective("ar", {"exclude_index": -1, "fused": False}, _ar)
    register_objective(
        "imdm",
        {"mask_index": -1, "T": 0, "fused": False, "noise_dim": 0, "noise_scale": 1.0, **_DIFF},
        _imdm,
    )
    register_objective(
        "interpolant",
        {
            "mask_index": -1,
            "kappa": "linear",
            "t_min": 1e-3,
            "p_uncond": 0.1,
            "num_classes": 0,
            "coupling": "ucoupling",
            "coupling_mask_prob": 0.8,
            "smooth": 0.0,
            "mask_ce": True,
            "elbo": False,
            "sigmoid_shift": None,
        },
        _interpolant,
    )

    register_data(
        "synthetic-text",
        {"n": 512, "length": 32, "vocab": 32, "seed": 0, "val_n": 64},
        _synthetic_text,
    )
    register_data(
        "synthetic-grid",
        {"n": 256, "size": 8, "vocab": 8, "classes": 4, "seed": 0, "val_n": 64},
        _synthetic_grid,
    )
    register_data("tokens", {"path": "", "val_path": "", "val_fraction": 0.01}, _tokens)
    register_data("text", text_data.TEXT_DATA_DEFAULTS, text_data.load)

    for objective, entry in text_samplers.ENTRIES.items():
        register_sampler(objective, entry)
    register_presets(text.PRESETS)
    register_presets(image.PRESETS)
