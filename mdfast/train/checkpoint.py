"""Atomic training checkpoints.

A checkpoint is written to ``<name>.tmp``, flushed and fsynced, then renamed over
``ckpt-<step>.pt`` (``os.replace`` is atomic on POSIX) and the directory is fsynced. Older
checkpoints are deleted only after the new one is complete, so a crash at any point leaves the
previous good checkpoint in place. Loading validates the file (a truncated or corrupt file raises
:class:`CheckpointError` naming it and the previous checkpoint, which is left untouched).
"""

from __future__ import annotations

import os
import re

import torch

__all__ = ["CheckpointError", "latest_checkpoint", "list_checkpoints", "load", "save"]

_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
REQUIRED = ("model", "optimizer", "scheduler", "step", "rng", "data", "config")


class CheckpointError(RuntimeError):
    pass


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """``(step, path)`` of complete checkpoints in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    out = []
    for name in os.listdir(directory):
        m = _NAME.match(name)
        if m:
            out.append((int(m.group(1)), os.path.join(directory, name)))
    return sorted(out)


def latest_checkpoint(directory: str) -> str | None:
    ckpts = list_checkpoints(directory)
    return ckpts[-1][1] if ckpts else None


def save(state: dict, directory: str, step: int, keep: int = 2) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"ckpt-{step:08d}.pt")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - directories cannot be fsynced on some filesystems
        pass
    if keep > 0:
        for _, old in list_checkpoints(directory)[:-keep]:
            os.remove(old)
    return path


def load(path: str, map_location="cpu") -> dict:
    previous = [p for _, p in list_checkpoints(os.path.dirname(path) or ".") if p != path]
    hint = (
        f"; the previous checkpoint {previous[-1]} is intact (resume from it with "
        f"train.resume={previous[-1]})"
        if previous
        else ""
    )
    if not os.path.exists(path):
        raise CheckpointError(f"mdfast: checkpoint {path} does not exist{hint}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(
            f"mdfast: checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e}){hint}"
        ) from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
        raise CheckpointError(
            f"mdfast: checkpoint {path} is not an mdfast training checkpoint (missing {missing})"
            f"{hint}"
        )
    return state
