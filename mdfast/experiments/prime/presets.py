"""MDM-Prime presets: the seed's image recipes (CIFAR-10, ImageNet-32; ℓ ∈ {1, 2, 3, 4, 8},
super-tokens, the uniform mixture), the text recipes (OWT, ℓ ∈ {2, 3, 4, 6, 8}) and the CPU-scale
8×8 digits (ℓ ∈ {1, 2, 4}).

Image recipe (the seed's ``image/main.py``, flow_matching's ``cifar10_discrete``): the ADM UNet
(96 channels, multipliers 3-4-4, 5 res-blocks, attention at 16×16, dropout 0.4, no time input),
AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0.01, global batch 512 (64 × 8 GPUs), fp32, no
gradient clipping, EMA 0.999 with warm-up, random horizontal flips, polynomial schedule
P(mask) = 1 − tⁿ (n = 3; 2 for super-tokens), the unweighted cross-entropy (``weighting=
"uniform"``) with the joint loss. Training length: the README's epochs × steps per epoch
(50,000 / 512 → 97 for CIFAR-10, 1,281,167 / 512 → 2,502 for ImageNet-32, drop-last per
rank as the seed). Sampling: the README's best setting at nfe = 512 for each model.

Text recipe (``text/configs``): DiT-small (12 × 768, 12 heads), time-agnostic, ℓ digits of each
GPT-2 token embedded (768/ℓ each), C = 50257 joint logits, log-linear schedule with the ELBO
weight 1/t and the joint (carry-over) loss; AdamW 3e-4, (0.9, 0.999), no weight decay, 2,500
warm-up steps then constant, batch 512, bf16, clip 1.0, EMA 0.9999, 1M steps. Data: OpenWebText
prepared by ``mdfast prepare-text openwebtext`` (GPT-2 BPE, wrap layout, L = 1024; ids < 50257).
"""

from __future__ import annotations

from mdfast.digits import prime_base
from mdfast.experiments.text import _MDLM_TRAIN
from mdfast.experiments.text_data import corpus_fields

__all__ = ["EPOCHS", "IMAGE_DIGITS", "PRESETS", "SAMPLE_SETTINGS", "TEXT_DIGITS", "image_preset"]

IMAGE_DIGITS = (1, 2, 3, 4, 8)
TEXT_DIGITS = (2, 3, 4, 6, 8)
STEPS_PER_EPOCH = {"cifar10": 50_000 // 512, "imagenet32": 1_281_167 // 512}

# the README's early-stopped epochs per model
EPOCHS = {
    "cifar10": {1: 2500, 2: 4250, 3: 3500, 4: 2500, 8: 1500, "supertoken": 2250, "mixture": 2500},
    "imagenet32": {1: 675, 2: 975, 3: 1050, 4: 900, 8: 650, "supertoken": 600, "mixture": 675},
}

# the README's best sampler per model at nfe = 512: (temperature, corrector, timestep, carry_over).
# Where the README lists timestep parameters (1, 0, 0) (meant as "off"; the seed's code maps every
# time to 0 with them) the presets say off: [].
_OFF: list = []
SAMPLE_SETTINGS = {
    "cifar10": {
        1: ([-0.15, 1.0, 1.0], [12.0, 2.0, 0.75], _OFF, True),
        2: ([-0.2, 2.0, 1.0], [16.0, 2.0, 0.75], [1.0, 1.7, 0.0], True),
        3: ([-0.1, 3.5, 1.0], [18.0, 1.0, 0.75], [1.0, 1.1, 0.0], False),
        4: ([-0.2, 3.0, 1.0], [16.0, 1.0, 1.0], _OFF, False),
        8: ([-0.15, 3.0, 1.0], [20.0, 0.5, 0.75], _OFF, True),
        "supertoken": ([-0.2, 0.75, 1.0], [4.0, 0.5, 1.75], _OFF, False),
        "mixture": ([-0.15, 1.0, 1.0], [12.0, 2.0, 0.75], _OFF, True),
    },
    "imagenet32": {
        1: ([1.0, 0.0, 0.0], [12.0, 1.0, 0.5], _OFF, True),
        2: ([1.0, 0.0, 0.0], [6.0, 2.0, 1.0], _OFF, True),
        3: ([-0.1, 3.0, 1.0], [2.0, 2.5, 1.25], [1.0, 1.3, 0.0], False),
        4: ([1.0, 0.0, 0.0], [12.0, 2.0, 1.25], [1.0, 1.1, 0.0], False),
        8: ([-0.2, 3.0, 1.0], [2.0, 2.0, 1.0], _OFF, True),
        "supertoken": ([1.0, 0.0, 0.0], [6.0, 1.0, 0.75], _OFF, False),
        "mixture": ([1.0, 0.0, 0.0], [12.0, 1.0, 0.5], _OFF, True),
    },
}

_IMAGE_TRAIN = {
    "lr": 1e-4,
    "betas": [0.9, 0.95],
    "weight_decay": 0.01,
    "batch_size": 512,
    "clip": 0.0,
    "ema": 0.999,
    "ema_warmup": True,
    "precision": "fp32",
    "log_every": 100,
}


def _sample(dataset: str, variant) -> dict:
    temperature, corrector, timestep, carry_over = SAMPLE_SETTINGS[dataset][variant]
    return {
        "sampler": "prime",
        "steps": 512,
        "batch_size": 100,
        "carry_over": carry_over,
        "temperature_parameters": list(temperature),
        "corrector_parameters": list(corrector),
        "timestep_parameters": list(timestep),
    }


def image_preset(dataset: str, variant) -> dict:
    """The preset of ``dataset`` (``cifar10`` / ``imagenet32``) and ``variant`` (ℓ, or
    ``"supertoken"``, or ``"mixture"``: ℓ = 1 with 4 mixture labels)."""
    ell = 1 if variant in ("supertoken", "mixture") else int(variant)
    objective = {
        "name": "prime",
        "num_classes": 256,
        "num_digits": ell,
        "layout": "image",
        "image_size": 32,
        "channels": 3,
        "convention": "polynomial",
        "schedule_n": 3.0,
        "loss": "joint",
        "weighting": "uniform",
        "hflip": True,
    }
    if variant == "supertoken":
        model = {"name": "unet", "preset": "cifar10-supertoken"}
        objective.update(num_classes=4096, super_token=True, schedule_n=2.0)
    elif ell == 1:
        model = {"name": "unet", "preset": "cifar10-mdm"}
    else:
        model = {
            "name": "unet",
            "preset": "cifar10-mdm",
            "digits": ell,
            "digit_vocab": prime_base(256, ell) + 1,
            "num_classes": 256,
        }
    if variant == "mixture":
        model["num_labels"] = 4
        objective["mixture_labels"] = 4
    name = f"prime-{dataset}-{variant if isinstance(variant, str) else f'l{ell}'}"
    steps = EPOCHS[dataset][variant] * STEPS_PER_EPOCH[dataset]
    return {
        "model": model,
        "objective": objective,
        "data": {"name": dataset},
        "train": {
            **_IMAGE_TRAIN,
            "steps": steps,
            "ckpt_every": 25 * STEPS_PER_EPOCH[dataset],
            "out_dir": f"runs/{name}",
        },
        "sample": _sample(dataset, variant),
    }


def _text_preset(ell: int) -> dict:
    return {
        "model": {"name": "prime_dit", "preset": "small", "vocab_size": 50257, "num_digits": ell},
        "objective": {
            "name": "prime",
            "num_classes": 50257,
            "num_digits": ell,
            "layout": "sequence",
            "convention": "mdlm",
            "loss": "joint",
            "weighting": "elbo",
        },
        "data": corpus_fields("openwebtext"),
        "train": {**_MDLM_TRAIN, "out_dir": f"runs/prime-owt-l{ell}"},
        "sample": {"sampler": "prime", "steps": 1024, "batch_size": 16, "length": 1024},
    }


def _digits8_preset(ell: int) -> dict:
    """The CPU-scale experiment (:mod:`mdfast.experiments.prime.cpu_table`): 8×8 digits at 16
    grey levels, a small UNet whose parameter count is the same for every ℓ up to the digit
    table (a few hundred parameters)."""
    return {
        "model": {
            "name": "unet",
            "preset": "tiny",
            "tokens_per_pixel": 1,
            "digits": ell,
            "digit_vocab": prime_base(16, ell) + 1,
            "num_classes": 16,
            "image_size": 8,
            "model_channels": 32,
            "token_dim": 32,
            "channel_mult": [1, 2],
            "num_res_blocks": 1,
            "attention_resolutions": [4],
            "num_head_channels": 16,
            "dropout": 0.0,
        },
        "objective": {
            "name": "prime",
            "num_classes": 16,
            "num_digits": ell,
            "layout": "image",
            "image_size": 8,
            "channels": 1,
            "convention": "polynomial",
            "schedule_n": 3.0,
            "loss": "joint",
            "weighting": "uniform",
            "hflip": False,
        },
        "data": {"name": "digits8"},
        "train": {
            "lr": 2e-3,
            "betas": [0.9, 0.95],
            "weight_decay": 0.01,
            "batch_size": 32,
            "clip": 1.0,
            "ema": 0.995,
            "warmup": 30,
            "lr_schedule": "cosine",
            "min_lr_ratio": 0.05,
            "steps": 600,
            "ckpt_every": 600,
            "log_every": 100,
            "out_dir": f"runs/prime-digits8-l{ell}",
            "tensorboard": False,
        },
        "sample": {"sampler": "prime", "steps": 32, "batch_size": 100},
    }


PRESETS: dict[str, dict] = {}
for _ds in ("cifar10", "imagenet32"):
    for _v in (*IMAGE_DIGITS, "supertoken", "mixture"):
        _p = image_preset(_ds, _v)
        PRESETS[_p["train"]["out_dir"].split("/")[-1]] = _p
for _ell in TEXT_DIGITS:
    PRESETS[f"prime-owt-l{_ell}"] = _text_preset(_ell)
for _ell in (1, 2, 4):
    PRESETS[f"prime-digits8-l{_ell}"] = _digits8_preset(_ell)
