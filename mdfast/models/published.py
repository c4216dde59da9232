"""Published MDLM-family checkpoints, in their own layouts, into mdfast's DiT.

:func:`load_pretrained` recognises

- MDLM (``kuleshov-group/mdlm``): the Hugging Face ``mdlm-owt`` directory (``config.json`` +
  ``model.safetensors``) or a Lightning ``.ckpt`` with ``backbone.*`` keys and EMA shadow
  parameters (``mdlm.ckpt``; also MDLM's SEDD baseline ``sedd.ckpt``, the same DiT with time
  conditioning): :func:`mdfast.models.dit.load_mdlm`;
- MDLM's AR baseline ``ar.ckpt`` (``models/autoregressive.py``): the same blocks without adaLN
  (``x + attn(LN(x))``, ``x + mlp(LN(x))``, ``linear(LN(x))``). It loads into a causal DiT whose
  adaLN modulations are the constants that make each block exactly that: weights 0, biases 0
  except the two gates (1), so the computation is the checkpoint's;
- SEDD (``louaaron/Score-Entropy-Discrete-Diffusion``): the Hugging Face ``sedd-small`` /
  ``sedd-medium`` directory (``config.json`` with ``model`` / ``tokens`` / ``graph`` +
  ``model.safetensors`` or ``pytorch_model.bin``, unprefixed keys) and a training run directory
  (``.hydra/config.yaml`` + ``checkpoints-meta/checkpoint.pth`` holding ``model`` and ``ema``),
  or that ``checkpoint.pth`` itself. SEDD's module names are the DiT's; its network outputs the
  log score ``z − log(e^σ − 1) − log(V − 1)`` with 0 at the input token, which is what
  :func:`mdfast.diffusion.sedd.sedd_log_score` computes from our raw logits.

Lightning checkpoints pickle the run's config and tokenizer objects (omegaconf, transformers,
lightning); :func:`torch_load_tolerant` reads them without those packages installed, replacing
any class it cannot import by an empty placeholder.
"""

from __future__ import annotations

import json
import os
import pickle

import torch

from mdfast.models.dit import DiT, DiTConfig, apply_weights, load_mdlm

__all__ = ["ar_state_to_dit", "load_pretrained", "torch_load_tolerant"]


class _Placeholder(dict):
    """Stands in for an unimportable pickled object (a run config, a tokenizer)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        self.__dict__["_state"] = state


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Placeholder,), {"__module__": module})


class _TolerantPickle:
    Unpickler = _TolerantUnpickler
    load = staticmethod(pickle.load)
    loads = staticmethod(pickle.loads)


def torch_load_tolerant(path: str, map_location="cpu"):
    """``torch.load`` of a full pickle (``weights_only=False``: Lightning and SEDD checkpoints
    hold config objects), with unimportable classes replaced by placeholders."""
    return torch.load(
        path, map_location=map_location, weights_only=False, pickle_module=_TolerantPickle
    )


def _strip(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        for prefix in ("backbone.", "model.backbone.", "module.backbone.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        out[k] = v
    return out


def _is_ar_layout(sd: dict) -> bool:
    return "blocks.0.attn_qkv.weight" in sd and "blocks.0.adaLN_modulation.weight" not in sd


def ar_state_to_dit(sd: dict, model: DiT) -> dict:
    """MDLM AR state dict (unprefixed) → a state dict of the causal DiT ``model``: its own
    parameters plus adaLN modulations that are the identity (gates 1, shifts/scales 0) and a
    zero time embedding (the AR model has none)."""
    own = model.state_dict()
    out = dict(sd)
    for k, v in own.items():
        if k in out:
            continue
        if "adaLN_modulation" in k or k.startswith("sigma_map."):
            z = torch.zeros_like(v)
            if k.startswith("blocks.") and k.endswith("adaLN_modulation.bias"):
                d = v.shape[0] // 6  # chunks: shift, scale, gate (msa), shift, scale, gate (mlp)
                z[2 * d : 3 * d] = 1
                z[5 * d : 6 * d] = 1
            out[k] = z
    return out


def _ar_shadow(shadow: list, sd: dict, model: DiT) -> list:
    """EMA shadow params of the AR model (its ``parameters()`` order = its state dict order
    without buffers) → one per DiT parameter, in the DiT's order."""
    names = [k for k in sd if k != "rotary_emb.inv_freq"]
    if len(shadow) != len(names):
        raise ValueError(
            f"mdfast: AR checkpoint EMA has {len(shadow)} shadow params for {len(names)} parameters"
        )
    by_name = dict(zip(names, shadow, strict=True))
    filled = ar_state_to_dit({}, model)
    return [by_name.get(n, filled.get(n, p.detach())) for n, p in model.named_parameters()]


def _sedd_run(path: str):
    """(state dict, EMA shadow) of a SEDD run directory or its ``checkpoint.pth``."""
    pth = path
    if os.path.isdir(path):
        pth = os.path.join(path, "checkpoints-meta", "checkpoint.pth")
        if not os.path.exists(pth):
            cands = sorted(
                f for f in os.listdir(os.path.join(path, "checkpoints")) if f.endswith(".pth")
            ) if os.path.isdir(os.path.join(path, "checkpoints")) else []  # fmt: skip
            if not cands:
                raise FileNotFoundError(
                    f"mdfast: SEDD run directory '{path}' has no checkpoints-meta/checkpoint.pth "
                    "or checkpoints/*.pth"
                )
            pth = os.path.join(path, "checkpoints", cands[-1])
    state = torch_load_tolerant(pth)
    ema = state.get("ema")
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    return _strip(state["model"]), shadow, pth


def _is_sedd_run(path: str) -> bool:
    if os.path.isdir(path):
        return os.path.isdir(os.path.join(path, ".hydra")) or os.path.isdir(
            os.path.join(path, "checkpoints-meta")
        )
    return path.endswith(".pth")


def load_pretrained(
    path: str | os.PathLike, config: DiTConfig, *, causal: bool = False, use_ema: bool = True
) -> DiT:
    """A DiT with the weights of the published checkpoint at ``path`` (see the module doc);
    ``config`` gives the architecture (a mismatch names the parameter and both shapes)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"mdfast: checkpoint '{path}' (model.init_from) does not exist")
    if _is_sedd_run(path):
        sd, shadow, where = _sedd_run(path)
        model = DiT(config, causal=causal)
        apply_weights(model, sd, shadow if use_ema else None, what=f"SEDD checkpoint {where}")
        return model
    if os.path.isfile(path) and not path.endswith(".safetensors"):
        ckpt = torch_load_tolerant(path)
        sd = _strip(ckpt.get("state_dict", ckpt))
        if _is_ar_layout(sd):
            model = DiT(config, causal=True)
            ema = ckpt.get("ema")
            shadow = ema.get("shadow_params") if use_ema and isinstance(ema, dict) else None
            if shadow is not None:
                shadow = _ar_shadow(shadow, sd, model)
            apply_weights(model, ar_state_to_dit(sd, model), shadow,
                          what=f"MDLM AR checkpoint {path}")  # fmt: skip
            return model
    if os.path.isdir(path):
        cfg_file = os.path.join(path, "config.json")
        if os.path.exists(cfg_file):
            with open(cfg_file) as f:
                cfg = json.load(f)
            if isinstance(cfg.get("model"), dict) and "graph" in cfg:  # SEDD's hub config
                ours = {"hidden_dim": "hidden_size", "cond_dim": "cond_dim",
                        "n_blocks": "n_blocks", "n_heads": "n_heads"}  # fmt: skip
                for field, key in ours.items():
                    if key in cfg["model"] and cfg["model"][key] != getattr(config, field):
                        raise ValueError(
                            f"mdfast: SEDD checkpoint {cfg_file} has model.{key}="
                            f"{cfg['model'][key]} but the preset has model.{field}="
                            f"{getattr(config, field)}"
                        )
    model = load_mdlm(path, config, use_ema=use_ema)
    model.causal = causal
    for b in model.blocks:
        b.causal = causal
    return model
