"""Text presets: MDLM / SEDD / AR / IMDM on OWT and LM1B (remdm and imdm seeds), the CPU-scale
Shakespeare versions, and tiny synthetic versions for tests and the demo.

OWT and LM1B train on directories made by ``mdfast prepare-text`` (``data.name=text``, see
:mod:`mdfast.experiments.text_data`): GPT-2 BPE, wrap layout, L = 1024, mask 50257 (vocabulary
50258) for OWT; bert-base-uncased, pad layout, L = 128, ``[MASK]`` = 103 for LM1B. The losses run
through the fused projection + CE (``objective.fused=true``)."""

from __future__ import annotations

from mdfast.experiments.text_data import corpus_fields

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
    "micro_batch_size": 64,  # MDLM: 512 = 8 GPUs × 64; fewer GPUs accumulate
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
        "objective": {**obj, "fused": True},
        "data": corpus_fields("openwebtext"),
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
        "objective": {**obj, "fused": True},
        "data": corpus_fields("lm1b"),
        "train": dict(_MDLM_TRAIN, out_dir=f"runs/{obj['name']}-lm1b"),
    }


def _tiny(obj: dict, **model) -> dict:
    return {
        "model": {"name": "dit", "preset": "tiny", "vocab_size": 33, **model},
        "objective": obj,
        "data": dict(_TINY_DATA),
        "train": dict(_TINY_TRAIN, out_dir=f"runs/tiny-{obj['name']}"),
    }


# CPU scale (mdfast.experiments.text_repro): the `shakespeare` package's plays, GPT-2 BPE, L = 128;
# a 4-block, 64-wide DiT (6.8M parameters, 6.4M of them the 50258-row embedding and head).
_SHAKESPEARE_TRAIN = {"lr": 2e-3, "warmup": 25, "batch_size": 8, "steps": 250, "clip": 1.0,
                      "ema": 0.99, "ckpt_every": 125, "log_every": 10}  # fmt: skip


def _shakespeare(obj: dict, **model) -> dict:
    return {
        "model": {"name": "dit", "preset": "tiny", "vocab_size": 50258, "hidden_dim": 64,
                  "cond_dim": 32, "n_blocks": 4, "n_heads": 4, "dropout": 0.0,
                  "model_length": 128, **model},
        "objective": {**obj, "fused": True},
        "data": corpus_fields("shakespeare"),
        "train": dict(_SHAKESPEARE_TRAIN, out_dir=f"runs/{obj['name']}-shakespeare"),
        "eval": {"K": 4, "batch_size": 32},
    }  # fmt: skip


PRESETS = {
    "mdlm-owt-small": _owt({"name": "mdlm", "mask_index": 50257}),
    "mdlm-owt-medium": _owt({"name": "mdlm", "mask_index": 50257}, "medium"),
    "mdlm-lm1b": _lm1b({"name": "mdlm", "mask_index": 103}),
    "sedd-owt-small": _owt({"name": "sedd", "mask_index": 50257}, time_conditioning=True),
    "ar-owt-small": _owt({"name": "ar", "exclude_index": 50257}, causal=True),
    "mdlm-shakespeare": _shakespeare({"name": "mdlm", "mask_index": 50257}),
    "sedd-shakespeare": _shakespeare({"name": "sedd", "mask_index": 50257}, time_conditioning=True),
    "ar-shakespeare": _shakespeare({"name": "ar", "exclude_index": 50257}, causal=True),
    "imdm-lm1b": _lm1b({"name": "imdm", "mask_index": 103}),
    "tiny-mdlm": _tiny({"name": "mdlm", "mask_index": 32}),
    "tiny-mdlm-discrete": _tiny({"name": "mdlm", "mask_index": 32, "T": 100}),
    "tiny-sedd": _tiny({"name": "sedd", "mask_index": 32}, time_conditioning=True),
    "tiny-ar": _tiny({"name": "ar"}, causal=True, vocab_size=32),
    "tiny-imdm": _tiny({"name": "imdm", "mask_index": 32}),
    "tiny-interpolant": _tiny({"name": "interpolant", "mask_index": 32, "kappa": "cosine"}),
}
