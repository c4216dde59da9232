"""Training: one trainer (torchrun DDP or one process), EMA, atomic checkpoints, exact resume."""

from mdfast.train.checkpoint import CheckpointError
from mdfast.train.ema import EMA
from mdfast.train.trainer import NonFiniteLossError, TrainConfig, train

__all__ = ["EMA", "CheckpointError", "NonFiniteLossError", "TrainConfig", "train"]
