"""Text presets: MDLM / SEDD / AR / IMDM on OWT and LM1B (remdm and imdm seeds) and tiny
synthetic versions for tests and the demo. Token data for OWT/LM1B: ``data.path`` = a ``.pt`` or
``.npy`` array of token ids [N, L] (GPT-2 ids for OWT with mask 50257, bert-base-uncased for
LM1B with ``[MASK]`` = 103)."""

from __future__ import annotations

# MDLM training defaults (configs/config.yaml): AdamW 3e-4, warm-up 2500, constant, batch 512,
# bf16, clip 1.0, EMA 0.9999.
_MDLM_TRAIN = {
    "lr": 3e-4,
    "warmup": 2500,
    "lr_schedule": "constant",
    "batch_size": 512,
    "precision": "bf16",
    "clip": 1.0,
    "ema": 0.9999,
    "steps": 1_000_000,
    "ckpt_every": 5000,
    "log_every": 100,
}

_TINY_TRAIN = {
    "lr": 1e-3,
    "warmup": 10,
    "batch_size": 16,
    "steps": 200,
    "clip": 1.0,
    "ckpt_every": 100,
    "log_every": 10,
    "out_dir": "runs/tiny",
}

_TINY_DATA = {"name": "synthetic-text", "n": 512, "length": 32, "vocab": 32}


def _owt(obj: dict, size: str = "small", **model) -> dict:
    return {
        "model": {"name": "dit", "preset": size, "vocab_size": 50258, **model},
        "objective": obj,
        "data": {"name": "tokens"},
        "train": dict(_MDLM_TRAIN, out_dir=f"runs/{obj['name']}-owt-{size}"),
    }


def _lm1b(obj: dict, **model) -> dict:
    return {
        "model": {
            "name": "dit",
            "preset": "small",
            "vocab_size": 30522,
            "model_length": 128,
            **model,
        },
        "objective": obj,
        "data": {"name": "tokens"},
        "train": dict(_MDLM_TRAIN, out_dir=f"runs/{obj['name']}-lm1b"),
    }


def _tiny(obj: dict, **model) -> dict:
    return {
        "model": {"name": "dit", "preset": "tiny", "vocab_size": 33, **model},
        "objective": obj,
        "data": dict(_TINY_DATA),
        "train": dict(_TINY_TRAIN, out_dir=f"runs/tiny-{obj['name']}"),
    }


PRESETS = {
    "mdlm-owt-small": _owt({"name": "mdlm", "mask_index": 50257}),
    "mdlm-owt-medium": _owt({"name": "mdlm", "mask_index": 50257}, "medium"),
    "mdlm-lm1b": _lm1b({"name": "mdlm", "mask_index": 103}),
    "sedd-owt-small": _owt({"name": "sedd", "mask_index": 50257}, time_conditioning=True),
    "ar-owt-small": _owt({"name": "ar"}, causal=True, vocab_size=50257),
    "imdm-lm1b": _lm1b({"name": "imdm", "mask_index": 103}),
    "tiny-mdlm": _tiny({"name": "mdlm", "mask_index": 32}),
    "tiny-mdlm-discrete": _tiny({"name": "mdlm", "mask_index": 32, "T": 100}),
    "tiny-sedd": _tiny({"name": "sedd", "mask_index": 32}, time_conditioning=True),
    "tiny-ar": _tiny({"name": "ar"}, causal=True, vocab_size=32),
    "tiny-imdm": _tiny({"name": "imdm", "mask_index": 32}),
    "tiny-interpolant": _tiny({"name": "interpolant", "mask_index": 32, "kappa": "cosine"}),
}
