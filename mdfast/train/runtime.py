"""The process a training run lives in: device and process group (torchrun), the RNG states of
torch / Python / NumPy (checkpointed, and seeded per rank for code that draws without a
:class:`mdfast.rng.NoiseKey`), deterministic kernels, and FSDP2 sharding."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mdfast import rng

__all__ = [
    "apply_fsdp",
    "autocast_dtype",
    "deterministic_kernels",
    "full_state_dict_options",
    "rng_state",
    "seed_fallback_rngs",
    "set_rng_state",
    "setup_distributed",
    "unwrap",
]


def _dist_env() -> tuple[int, int, int]:
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def setup_distributed(device: str = "") -> tuple[int, int, torch.device]:
    rank, world, local = _dist_env()
    if device:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def rng_state(dev: torch.device) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
    }


def set_rng_state(state: dict, dev: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], dev)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002


def seed_fallback_rngs(seed: int, rank: int, *ids: int) -> None:
    """Seed torch / Python / NumPy for code that draws without a NoiseKey (a user objective):
    one unrelated stream per rank, so ranks never repeat each other's draws."""
    s = rng.stream_seed(seed, "fallback", rank, *ids)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002


@contextlib.contextmanager
def deterministic_kernels(on: bool):
    """``torch.use_deterministic_algorithms(True)`` (+ cuBLAS workspace config, cuDNN
    deterministic) inside the block when ``on``; the previous settings are restored after."""
    if not on:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    # cuBLAS reads this when it creates a handle's workspace: set it before the first CUDA matmul
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]


def autocast_dtype(precision: str, device, option: str = "precision"):
    """The autocast dtype of ``precision``: ``auto`` = bf16 on CUDA, fp32 (None) elsewhere;
    ``bf16``; ``fp32`` (None). A bad value raises naming ``option``."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"mdfast: {option} must be auto, bf16 or fp32, got '{precision}'")
    if precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda"):
        return torch.bfloat16
    return None


def unwrap(m: nn.Module) -> nn.Module:
    m = getattr(m, "_orig_mod", m)
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def apply_fsdp(objective: nn.Module, world: int) -> None:
    """FSDP2: shard every block of every ``blocks`` ModuleList, then the root."""
    from torch.distributed.fsdp import fully_shard

    if world < 2:
        raise ValueError("mdfast: 'fsdp' needs torchrun with at least 2 processes")
    for m in objective.modules():
        blocks = getattr(m, "blocks", None)
        if isinstance(blocks, nn.ModuleList):
            for b in blocks:
                fully_shard(b)
    fully_shard(objective)


def full_state_dict_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)
