"""Presets of the discrete-interpolant experiments ("[MASK] is All You Need").

* ``interpolant-imagenet-uvit``: ImageNet-256 as 32×32 VQ-f8 indices (16384 codes, mask 16384),
  class-conditional U-ViT-H/2 without a time token (``uvit_h2_it``), the seed README's
  ``train_acc_vq.py`` command: AdamW lr 1e-4, wd 0, batch 64 × 4 GPUs, bf16, 1.5M steps;
  ``config/default.yaml``'s EMA 0.9999 and gradient clipping 1.0. Sampling as the headline
  FID 8.26: MaskGIT, 20 steps, CFG 2, temperature 1.3, linear Gumbel randomisation.
* ``interpolant-coco-uvit``: COCO-14 indices with 77 CLIP text tokens (``uvit_s2deep_it``: d 512,
  depth 16, 8 heads; null text from ``clip_empty_context.npy``), the ``train_ds_vq.py`` command:
  Adam lr 2e-4, β = (0.9, 0.9), 5k warm-up steps, batch 64 × 4 GPUs × 4 accumulation, 1M steps,
  bf16.
* ``interpolant-digits14``: the CPU-scale run (:mod:`~.table`): MNIST at 14×14 with 16 grey
  levels (vocab 17), a small class-conditional U-ViT, 10% label drop, masked CE, linear κ.
* ``tiny-interpolant-uvit``: a synthetic class-conditional grid task for tests.

VQ token data (``data.name=vq-tokens``): ``data.path`` an ``.npz`` / ``.npy`` written by
:func:`mdfast.data.vq_tokens.save_vq_tokens` (e.g. by ``python -m
mdfast.experiments.interpolants.tokenize``), checked against ``data.codebook_size``.
"""

from __future__ import annotations

from mdfast.experiments.interpolants.digits import MASK, SIZE, VOCAB_SIZE

__all__ = ["PRESETS"]

_VQ_F8 = {"name": "vq-tokens", "codebook_size": 16384}

PRESETS: dict[str, dict] = {
    "interpolant-imagenet-uvit": {
        "model": {"name": "uvit", "preset": "uvit_h2_it"},
        "objective": {"name": "interpolant", "mask_index": 16384, "kappa": "linear",
                      "p_uncond": 0.1, "num_classes": 1000},
        "data": dict(_VQ_F8),
        "train": {"lr": 1e-4, "weight_decay": 0.0, "batch_size": 256, "precision": "bf16",
                  "ema": 0.9999, "clip": 1.0, "steps": 1_500_000, "ckpt_every": 20_000,
                  "log_every": 100, "out_dir": "runs/interpolant-imagenet-uvit"},
        "sample": {"sampler": "maskgit", "steps": 20, "cfg_scale": 2.0, "temperature": 1.3,
                   "randomize": "linear", "batch_size": 16},
    },
    "interpolant-coco-uvit": {
        "model": {"name": "uvit", "preset": "uvit_s2deep_it",
                  "null_context_path": "data/clip_empty_context.npy"},
        "objective": {"name": "interpolant", "mask_index": 16384, "kappa": "linear",
                      "p_uncond": 0.1},
        "data": dict(_VQ_F8),
        "train": {"lr": 2e-4, "betas": [0.9, 0.9], "warmup": 5000, "batch_size": 1024,
                  "grad_accum": 4, "precision": "bf16", "ema": 0.9999, "clip": 1.0,
                  "steps": 1_000_000, "ckpt_every": 20_000, "log_every": 100,
                  "out_dir": "runs/interpolant-coco-uvit"},
        "sample": {"sampler": "maskgit", "steps": 20, "cfg_scale": 2.0, "batch_size": 16},
    },
    "interpolant-digits14": {
        "model": {"name": "uvit", "preset": "tiny", "vocab_size": VOCAB_SIZE,
                  "image_size": SIZE, "patch_size": 2, "dim": 64, "depth": 4, "heads": 4,
                  "num_classes": 10},
        "objective": {"name": "interpolant", "mask_index": MASK, "kappa": "linear",
                      "p_uncond": 0.1, "num_classes": 10},
        "data": {"name": "digits14"},
        "train": {"lr": 2e-3, "weight_decay": 0.0, "batch_size": 64, "warmup": 50,
                  "lr_schedule": "cosine", "min_lr_ratio": 0.1, "ema": 0.995, "clip": 1.0,
                  "steps": 900, "ckpt_every": 900, "log_every": 50, "tensorboard": False,
                  "out_dir": "runs/interpolant-digits14"},
        "sample": {"sampler": "maskgit", "steps": 16, "cfg_scale": 2.0, "batch_size": 20},
    },
    "tiny-interpolant-uvit": {
        "model": {"name": "uvit", "preset": "tiny", "vocab_size": 9, "num_classes": 4},
        "objective": {"name": "interpolant", "mask_index": 8, "kappa": "cosine",
                      "p_uncond": 0.1, "num_classes": 4},
        "data": {"name": "synthetic-grid", "n": 256, "size": 8, "vocab": 8, "classes": 4},
        "train": {"lr": 1e-3, "warmup": 10, "batch_size": 16, "steps": 200,
                  "out_dir": "runs/tiny-interpolant-uvit", "ckpt_every": 100},
        "sample": {"sampler": "euler", "steps": 8, "cfg_scale": 1.0},
    },
}  # fmt: skip
