"""The synthetic task's presets (``mdfast train|distill|sample imdm-synthetic-*``).

IMDM's ``configs/model/synthetic.yaml`` is a 4-block, 128-wide DiT; here a 2-block, 64-wide one
(the same task, a tenth of the compute, so the whole pipeline runs on two CPU cores). L = 10,
V = 32 (+ the mask, id 32), 10 000 training sequences. The step counts are the pipeline's
``full`` scale (:mod:`~.pipeline`), which the pipeline sets itself.
"""

from __future__ import annotations

__all__ = ["LENGTH", "MASK", "PRESETS", "VOCAB"]

VOCAB, LENGTH = 32, 10
MASK = VOCAB

MODEL = {"name": "dit", "preset": "tiny", "vocab_size": VOCAB + 1, "hidden_dim": 64,
         "cond_dim": 32, "n_blocks": 2, "n_heads": 4, "dropout": 0.0,
         "model_length": LENGTH}  # fmt: skip
DATA = {"name": "synthetic-align", "n": 10_000, "length": LENGTH, "vocab": VOCAB, "seed": 0,
        "val_n": 256}  # fmt: skip
TRAIN = {"lr": 1e-3, "warmup": 50, "batch_size": 128, "steps": 600, "clip": 1.0, "ema": 0.0,
         "ckpt_every": 100_000, "keep_ckpts": 1, "log_every": 50, "tensorboard": False}  # fmt: skip
SAMPLE = {"sampler": "imdm", "steps": 1, "batch_size": 2000, "use_ema": False}
_SDTT = {"name": "sdtt", "mask_index": MASK, "start_steps": 64, "round_steps": 60,
         "num_distill_steps": 2, "loss": "kl-bwd", "fix_eps": True}  # fmt: skip
COUPLING = {"name": "coupling", "path": "runs/imdm-synthetic/coupling", "pairs": 2048,
            "perturbed": True, "teacher_steps": 16, "gen_batch_size": 512, "seed": 42,
            "length": LENGTH}  # fmt: skip


def _preset(objective: dict, out: str, data: dict | None = None) -> dict:
    return {"model": dict(MODEL), "objective": objective, "data": dict(data or DATA),
            "train": {**TRAIN, "out_dir": f"runs/imdm-synthetic/{out}"},
            "sample": dict(SAMPLE)}  # fmt: skip


PRESETS = {
    "imdm-synthetic-mdlm": _preset({"name": "mdlm", "mask_index": MASK}, "mdlm"),
    "imdm-synthetic-imdm": _preset({"name": "imdm", "mask_index": MASK}, "imdm"),
    "imdm-synthetic-sdtt": _preset({**_SDTT, "base": "mdlm"}, "sdtt"),
    "imdm-synthetic-imsdtt": _preset({**_SDTT, "base": "imdm"}, "imsdtt"),
    "imdm-synthetic-imredi": _preset(
        {"name": "redi", "mask_index": MASK, "base": "imdm"}, "imredi", COUPLING
    ),
}
