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


# Few-step distillation (IMDM's scripts): SDTT / IM-SDTT from an MDLM (or IMDM) checkpoint
# (model.init_from=CKPT), lr 6e-5, 500 warm-up steps, rounds of 10k steps from 1024 teacher steps,
# global batch 32 (LM1B) / 128 (OWT); ReDi / IM-ReDi on a coupling of 100k pairs made by the
# IM-SDTT teacher with 1024 steps, 50k steps at batch 128. IMDM's LM1B runs use the wrap layout
# (its lm1b-wrap data); these presets train on the corpus preset's data section.
_DISTILL_TRAIN = {**_MDLM_TRAIN, "lr": 6e-5, "warmup": 500, "steps": 70_000, "ckpt_every": 10_000,
                  "log_every": 50}  # fmt: skip
_REDI_TRAIN = {**_MDLM_TRAIN, "warmup": 500, "steps": 50_000, "batch_size": 128,
               "ckpt_every": 10_000, "log_every": 50}  # fmt: skip
_SDTT = {"name": "sdtt", "start_steps": 1024, "round_steps": 10_000, "num_distill_steps": 2,
         "loss": "kl-bwd", "fix_eps": True}  # fmt: skip


def _coupling(corpus: str, length: int, gen_batch: int) -> dict:
    return {"name": "coupling", "path": f"data/couplings/imsdtt-{corpus}", "pairs": 100_000,
            "perturbed": True, "teacher_steps": 1024, "gen_batch_size": gen_batch, "seed": 42,
            "tokenizer": corpus_fields(corpus)["tokenizer"], "length": length}  # fmt: skip


def _distilled(base: dict, *, train: dict, data: dict | None = None) -> dict:
    out = {**base, "train": {**train, "out_dir": base["train"]["out_dir"]}}
    if data is not None:
        out["data"] = data
    return out


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
    "sdtt-lm1b": _distilled(
        _lm1b({**_SDTT, "mask_index": 103, "base": "mdlm"}),
        train={**_DISTILL_TRAIN, "batch_size": 32},
    ),
    "imsdtt-lm1b": _distilled(
        _lm1b({**_SDTT, "mask_index": 103, "base": "imdm"}),
        train={**_DISTILL_TRAIN, "batch_size": 32},
    ),
    "imsdtt-owt": _distilled(
        _owt({**_SDTT, "mask_index": 50257, "base": "imdm", "noise_dim": 2048}),
        train={**_DISTILL_TRAIN, "batch_size": 128},
    ),
    "imredi-lm1b": _distilled(
        _lm1b({"name": "redi", "mask_index": 103, "base": "imdm"}),
        train=_REDI_TRAIN,
        data=_coupling("lm1b", 128, 128),
    ),
    "imredi-owt": _distilled(
        _owt({"name": "redi", "mask_index": 50257, "base": "imdm", "noise_dim": 2048}),
        train=_REDI_TRAIN,
        data=_coupling("openwebtext", 1024, 32),
    ),
    "tiny-mdlm": _tiny({"name": "mdlm", "mask_index": 32}),
    "tiny-mdlm-discrete": _tiny({"name": "mdlm", "mask_index": 32, "T": 100}),
    "tiny-sedd": _tiny({"name": "sedd", "mask_index": 32}, time_conditioning=True),
    "tiny-ar": _tiny({"name": "ar"}, causal=True, vocab_size=32),
    "tiny-imdm": _tiny({"name": "imdm", "mask_index": 32}),
    "tiny-sdtt": _tiny(
        {**_SDTT, "mask_index": 32, "base": "mdlm", "start_steps": 16, "round_steps": 10}
    ),
    "tiny-imsdtt": _tiny(
        {**_SDTT, "mask_index": 32, "base": "imdm", "start_steps": 16, "round_steps": 10}
    ),
    "tiny-imredi": {
        **_tiny({"name": "redi", "mask_index": 32, "base": "imdm"}),
        "data": {
            "name": "coupling",
            "path": "runs/tiny-coupling",
            "pairs": 128,
            "teacher_steps": 16,
            "gen_batch_size": 64,
            "length": 32,
        },
    },
    "tiny-interpolant": _tiny({"name": "interpolant", "mask_index": 32, "kappa": "cosine"}),
}
