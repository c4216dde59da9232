"""Image presets: discrete interpolants with a class-conditional U-ViT over VQ-f8 token grids
("[MASK] is All You Need"), and a tiny synthetic version. VQ token data: ``data.path`` = a ``.pt``
with ``{"input_ids": [N, 32, 32], "label": [N]}`` (codes 0..16383, mask 16384). The MDM-Prime
ADM UNet presets come with the Prime objective (``model.name=unet``, see ``UNET_PRESETS``)."""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # ImageNet-256 VQ-f8 tokens, U-ViT-H/2 without a time token ("uvit_h2_it"), as the seed
    # README's train_acc_vq.py command: AdamW 1e-4, wd 0, batch 4 x 64, bf16, 1.5M steps;
    # EMA 0.9999, clip 1.0
    "interpolant-imagenet-uvit": {
        "model": {"name": "uvit", "preset": "uvit_h2_it"},
        "objective": {"name": "interpolant", "mask_index": 16384, "kappa": "linear",
                      "p_uncond": 0.1, "num_classes": 1000},
        "data": {"name": "tokens"},
        "train": {"lr": 1e-4, "batch_size": 256, "precision": "bf16", "ema": 0.9999,
                  "clip": 1.0, "steps": 1_500_000, "ckpt_every": 5000, "log_every": 100,
                  "out_dir": "runs/interpolant-imagenet-uvit"},
    },
    "tiny-interpolant-uvit": {
        "model": {"name": "uvit", "preset": "tiny", "vocab_size": 9, "num_classes": 4},
        "objective": {"name": "interpolant", "mask_index": 8, "kappa": "cosine",
                      "p_uncond": 0.1, "num_classes": 4},
        "data": {"name": "synthetic-grid", "n": 256, "size": 8, "vocab": 8, "classes": 4},
        "train": {"lr": 1e-3, "warmup": 10, "batch_size": 16, "steps": 200,
                  "out_dir": "runs/tiny-interpolant-uvit", "ckpt_every": 100},
    },
}  # fmt: skip
