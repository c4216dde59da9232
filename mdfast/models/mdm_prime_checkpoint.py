"""The released MDM-Prime image checkpoints (``checkpoint-<epoch>.pth``, flow_matching's UNet
layout) loaded into :class:`mdfast.models.UNet` from local files.

A checkpoint is ``torch.save({"model": state_dict, "optimizer": ..., "epoch": ..., "args":
argparse.Namespace})``. Its ``state_dict`` is the seed's ``DiscreteUNetModel`` /
``DiscretePrimeUNetModel`` (keys ``pixel_embedding.embedding_table.weight``, ``unet.*``), or,
when trained with ``--use_ema``, the ``EMA`` wrapper around it (``model.<those keys>``,
``num_updates`` and ``shadow_params.<i>`` = the EMA of the i-th parameter in registration
order, which is the order of the ``model.*`` keys).

Name map (seed → mdfast): ``pixel_embedding.embedding_table`` → ``digit_embed``; ``unet.`` is
dropped; ``skip_connection`` → ``skip``; everything else keeps its name. The seed's time-free
res-blocks hold a constant scale-shift ``emb_layers.embedding_table`` = [s; h]
(``ConstantEmbedding``) applied after the second GroupNorm, ``GN(x)·(1 + s) + h``. Since
GN(x) = x̂·γ + β, that is a GroupNorm with γ' = γ(1 + s) and β' = β(1 + s) + h, which is what
the loader stores (the same function, no extra parameters). Label-conditioned checkpoints
(``num_classes``) keep their ``emb_layers.1`` linear layers and ``label_emb``.

The architecture comes from the checkpoint's ``args`` (``target_length`` ℓ, ``vocab_size`` C,
``super_token``, ``use_uniform_mixture`` / ``mixture_classes``), checked against the tensors'
shapes; ``expect`` (e.g. the preset's ℓ and C) raises a clear error on a mismatch.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import replace
from pathlib import Path

import torch

from mdfast.digits import prime_base
from mdfast.models.dit import load_state_dict_checked
from mdfast.models.unet import UNET_PRESETS, UNet, UNetConfig

__all__ = [
    "CheckpointMismatchError",
    "config_from_checkpoint",
    "convert_state_dict",
    "is_mdm_prime_checkpoint",
    "load_mdm_prime_checkpoint",
    "read_checkpoint",
]

_CONST = re.compile(r"^(?P<block>.*)\.emb_layers\.embedding_table$")


class CheckpointMismatchError(ValueError):
    """A checkpoint whose ℓ, C or layout disagrees with what the caller expects."""


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint dict, read without running arbitrary pickled code (``weights_only``, with
    ``argparse.Namespace`` allowed for the seed's ``args``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mdfast: checkpoint file '{path}' not found")
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointMismatchError(
            f"mdfast: '{path}' is not an MDM-Prime image checkpoint (no 'model' state dict)"
        )
    return ckpt


def is_mdm_prime_checkpoint(ckpt: dict) -> bool:
    """Whether a loaded checkpoint dict is in the seed's layout (not an mdfast training run)."""
    sd = ckpt.get("model")
    if not isinstance(sd, dict):
        return False
    return any(k.split("model.", 1)[-1].startswith("pixel_embedding.") for k in sd)


def _args(ckpt: dict) -> dict:
    a = ckpt.get("args")
    if isinstance(a, argparse.Namespace):
        return vars(a)
    return dict(a) if isinstance(a, dict) else {}


def _unwrap_ema(sd: dict, use_ema: bool, where: str) -> dict:
    """The bare model's state dict, with EMA shadows in place of the weights if asked."""
    if not any(k.startswith("model.") for k in sd):
        if use_ema:
            raise CheckpointMismatchError(
                f"mdfast: {where} has no EMA weights (it was trained without --use_ema); "
                "load it with use_ema=False"
            )
        return dict(sd)
    model = {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
    if not use_ema:
        return model
    shadows = sorted(
        (int(k.split(".")[1]), v) for k, v in sd.items() if k.startswith("shadow_params.")
    )
    if len(shadows) != len(model):
        raise CheckpointMismatchError(
            f"mdfast: {where} has {len(shadows)} EMA shadow parameters for {len(model)} "
            "model parameters"
        )
    out = {}
    for (name, value), (_, shadow) in zip(model.items(), shadows, strict=True):
        if tuple(shadow.shape) != tuple(value.shape):
            raise CheckpointMismatchError(
                f"mdfast: {where}: EMA shadow of '{name}' has shape {list(shadow.shape)}, the "
                f"parameter {list(value.shape)}"
            )
        out[name] = shadow
    return out


def convert_state_dict(seed_state: dict) -> dict:
    """The seed model's state dict (no EMA wrapper) in :class:`UNet`'s names, constant
    scale-shifts folded into the GroupNorm before them (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    constants: dict[str, torch.Tensor] = {}
    for key, value in seed_state.items():
        k = key[len("unet.") :] if key.startswith("unet.") else key
        if k == "pixel_embedding.embedding_table.weight":
            out["digit_embed.weight"] = value
            continue
        m = _CONST.match(k)
        if m:
            constants[m.group("block")] = value
            continue
        out[k.replace(".skip_connection.", ".skip.")] = value
    for block, table in constants.items():
        scale, shift = table.reshape(-1).double().chunk(2)
        gamma, beta = f"{block}.out_layers.0.weight", f"{block}.out_layers.0.bias"
        if gamma not in out or out[gamma].numel() != scale.numel():
            raise CheckpointMismatchError(
                f"mdfast: constant scale-shift of '{block}' has no GroupNorm of its width"
            )
        g, b = out[gamma], out[beta]
        out[gamma] = (g.double() * (1 + scale)).to(g.dtype)
        out[beta] = (b.double() * (1 + scale) + shift).to(b.dtype)
    return out


def config_from_checkpoint(ckpt: dict, base: UNetConfig | None = None) -> UNetConfig:
    """The :class:`UNetConfig` of a seed checkpoint: the CIFAR-10 ADM UNet (or ``base``) with the
    checkpoint's ℓ, C, tokens per pixel and labels, checked against the tensors."""
    args = _args(ckpt)
    sd = ckpt["model"]
    strip = "model." if any(k.startswith("model.") for k in sd) else ""
    emb = sd.get(f"{strip}pixel_embedding.embedding_table.weight")
    out_w = sd.get(f"{strip}unet.out.2.weight")
    if emb is None or out_w is None:
        raise CheckpointMismatchError(
            "mdfast: checkpoint lacks pixel_embedding.embedding_table / unet.out.2 (not the "
            "MDM-Prime image UNet)"
        )
    super_token = bool(args.get("super_token", emb.shape[0] == 4097))
    digits = int(args.get("target_length", 1))
    tokens = 2 if super_token else 3
    if super_token:
        num_classes = digit_vocab = 4097
    elif digits == 1:
        num_classes = digit_vocab = 257
    else:
        vocab = int(args.get("vocab_size", 256))
        num_classes, digit_vocab = vocab, prime_base(vocab, digits) + 1
    labels = int(args.get("mixture_classes", 0)) if args.get("use_uniform_mixture") else 0
    if labels == 0 and any(k.endswith("label_emb.weight") for k in sd):
        labels = sd[f"{strip}unet.label_emb.weight"].shape[0] - 1
    base = base or UNET_PRESETS["cifar10-mdm"]
    cfg = replace(
        base,
        tokens_per_pixel=tokens,
        digits=1 if super_token else digits,
        digit_vocab=digit_vocab,
        # the seed feeds the embeddings straight into the first level: T · d = channels
        token_dim=base.model_channels * base.channel_mult[0] // tokens,
        num_classes=num_classes,
        num_labels=labels,
    )
    if tuple(emb.shape) != (digit_vocab, cfg.token_dim // cfg.digits):
        raise CheckpointMismatchError(
            f"mdfast: checkpoint args say ℓ={digits}, C={num_classes} (digit table "
            f"[{digit_vocab}, {cfg.token_dim // cfg.digits}]) but its pixel embedding is "
            f"{list(emb.shape)}"
        )
    if out_w.shape[0] != tokens * num_classes:
        raise CheckpointMismatchError(
            f"mdfast: checkpoint output layer has {out_w.shape[0]} channels, expected "
            f"{tokens} x {num_classes}"
        )
    return cfg


def load_mdm_prime_checkpoint(
    path: str | os.PathLike,
    *,
    use_ema: bool = True,
    expect: dict | None = None,
    base: UNetConfig | None = None,
    map_location="cpu",
) -> tuple[UNet, dict]:
    """A released MDM-Prime image checkpoint as a :class:`UNet`; returns ``(model, args)`` with
    the seed's training arguments as a dict.

    ``use_ema``: the EMA weights (the seed's ``--use_ema``; an error when the file has none).
    ``expect``: config fields the caller requires (e.g. ``{"digits": 2, "num_classes": 256}``
    from a preset); a disagreement raises :class:`CheckpointMismatchError` naming the field.
    """
    ckpt = read_checkpoint(path, map_location)
    cfg = config_from_checkpoint(ckpt, base)
    for field, want in (expect or {}).items():
        have = getattr(cfg, field)
        if have != want:
            raise CheckpointMismatchError(
                f"mdfast: checkpoint '{path}' has {field}={have}, the preset expects {want}"
            )
    state = convert_state_dict(_unwrap_ema(ckpt["model"], use_ema, f"checkpoint '{path}'"))
    model = UNet(cfg)
    load_state_dict_checked(model, state, what=f"MDM-Prime checkpoint {path}")
    return model, _args(ckpt)
