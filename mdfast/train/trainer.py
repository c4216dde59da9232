"""One trainer for every experiment.

``train(objective, dataset, cfg)`` runs ``cfg.steps`` optimiser steps of ``objective`` (an
``nn.Module`` whose ``forward(batch)`` returns ``(loss, metrics)``, see
:mod:`mdfast.diffusion.base`) on ``dataset``.

- Launch: plain ``python`` (one process) or ``torchrun --nproc_per_node=N`` (DDP; ``gloo`` on CPU,
  ``nccl`` on GPU). The global batch ``cfg.batch_size`` is split across ranks and
  ``cfg.grad_accum`` micro-batches (see :mod:`mdfast.train.data`).
- Noise: every micro-batch runs under a :class:`mdfast.rng.NoiseKey` (``cfg.seed``, global step,
  the samples' positions in the global batch), so the objectives' draws (t, masks, ε, label
  drop) and keyed dropout are the same for a sample whatever the number of ranks and
  micro-batches: 1 and N processes compute the same losses up to float summation order (the
  token mean and the gradient all-reduce add in another order). torch's own generator is seeded
  per rank and only serves code that draws without a key.
- Reproducible: on CPU two runs with the same seed are bit-identical at any thread count;
  ``deterministic=True`` also asks torch for deterministic kernels
  (``torch.use_deterministic_algorithms``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, cuDNN
  deterministic) for GPU runs, restored when ``train`` returns.
- bf16 autocast (``precision="bf16"``), gradient clipping, linear warm-up then constant or cosine
  LR, EMA, optional ``torch.compile``.
- Checkpoints (atomic, see :mod:`mdfast.train.checkpoint`) hold the objective's state, EMA,
  optimiser, LR scheduler, step, every rank's RNG states and the data position; ``resume``
  (``"auto"`` = latest in ``out_dir``, or a path) continues exactly.
- Logs (:mod:`mdfast.train.logs`): a progress line (loss, samples/s, tokens/s) on rank 0,
  ``log.csv`` in ``out_dir``, TensorBoard when ``torch.utils.tensorboard`` imports, wandb when
  ``cfg.wandb`` and installed.
- ``MDFAST_NVTX=1`` wraps forward/backward/step in NVTX ranges (CUDA only).
- A non-finite loss raises :class:`NonFiniteLossError` with the step number before the optimiser
  step; no checkpoint is written, so the last one stays intact.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from mdfast import rng
from mdfast.train import checkpoint as ckpt_io
from mdfast.train import runtime
from mdfast.train.data import StepBatches
from mdfast.train.ema import EMA
from mdfast.train.logs import Progress, RunLog
from mdfast.train.runtime import setup_distributed

__all__ = ["NonFiniteLossError", "TrainConfig", "train"]


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    steps: int = 1000
    batch_size: int = 32  # global, over all ranks and micro-batches
    grad_accum: int = 1
    micro_batch_size: int = 0  # >0: per-rank micro-batch; grad_accum = batch / (world × this)
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    warmup: int = 0
    lr_schedule: str = "constant"  # constant | cosine
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    clip: float = 1.0  # 0 disables
    ema: float = 0.0  # decay; 0 disables
    ema_warmup: bool = True
    precision: str = "fp32"  # fp32 | bf16
    compile: bool = False
    ckpt_every: int = 1000
    keep_ckpts: int = 2
    log_every: int = 10
    seed: int = 0
    resume: str = ""  # "" | "auto" | path
    progress: bool = True
    tensorboard: bool = True
    wandb: bool = False
    device: str = ""  # "" = cuda:<local_rank> when available, else cpu
    fsdp: bool = False  # FSDP2 (fully_shard per transformer block + root) instead of DDP
    deterministic: bool = False  # torch.use_deterministic_algorithms (for GPU kernels)


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------


def _to(batch, dev):
    if isinstance(batch, torch.Tensor):
        return batch.to(dev, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to(v, dev) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, dev) for v in batch)
    return batch


def _count_tokens(batch) -> int:
    if isinstance(batch, dict):
        x = batch.get("input_ids", next(iter(batch.values())))
    elif isinstance(batch, (list, tuple)):
        x = batch[0]
    else:
        x = batch
    return x.numel() if isinstance(x, torch.Tensor) and x.dtype == torch.int64 else 0


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if cfg.warmup and step < cfg.warmup:
            return (step + 1) / cfg.warmup
        if cfg.lr_schedule == "constant":
            return 1.0
        if cfg.lr_schedule == "cosine":
            span = max(1, cfg.steps - cfg.warmup)
            prog = min(1.0, (step - cfg.warmup) / span)
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))
        raise ValueError(
            f"mdfast: unknown lr_schedule '{cfg.lr_schedule}'; valid: ['constant', 'cosine']"
        )

    return f


def _validate(cfg: TrainConfig) -> None:
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"mdfast: unknown precision '{cfg.precision}'; valid: ['bf16', 'fp32']")
    lr_lambda(cfg)(0)  # validates lr_schedule


def _nvtx(name: str, on: bool):
    return torch.cuda.nvtx.range(name) if on else contextlib.nullcontext()


@dataclass
class _StepTotals:
    """Sums over one step's micro-batches on this rank."""

    loss: torch.Tensor
    metrics: dict
    samples: int = 0
    tokens: int = 0


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class _Run:
    """One training run; each method is one phase of :func:`train`."""

    def __init__(self, objective: nn.Module, dataset, cfg: TrainConfig, full_config):
        _validate(cfg)
        self.cfg, self.full_config = cfg, full_config
        self.rank, self.world, self.dev = setup_distributed(cfg.device)
        if cfg.micro_batch_size > 0:
            cfg.grad_accum = max(1, cfg.batch_size // (self.world * cfg.micro_batch_size))
        self.objective = objective.to(self.dev)
        if cfg.fsdp:
            runtime.apply_fsdp(objective, self.world)
        self.data = StepBatches(dataset, cfg.batch_size, cfg.grad_accum, self.rank, self.world,
                                cfg.seed)  # fmt: skip
        self._build_optimizer()
        self.start, self.last_ckpt = self._resume()
        self.model = self._wrap()
        self.nvtx = os.environ.get("MDFAST_NVTX", "0") == "1" and self.dev.type == "cuda"

    # -- setup ---------------------------------------------------------------------------------

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        self.params = [p for p in self.objective.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg))
        self.ema = EMA(self.objective, cfg.ema, cfg.ema_warmup) if cfg.ema > 0 else None

    def _resume(self) -> tuple[int, str | None]:
        """Load the checkpoint ``cfg.resume`` names, if any: (start step, its path)."""
        cfg = self.cfg
        path = None
        if cfg.resume:
            path = ckpt_io.latest_checkpoint(cfg.out_dir) if cfg.resume == "auto" else cfg.resume
        if not path:
            runtime.seed_fallback_rngs(cfg.seed, self.rank)
            return 0, None
        state = ckpt_io.load(path)
        self._check_resumable(state, path)
        self._load_training_state(state)
        start = int(state["step"])
        self._restore_fallback_rngs(state["rng"], start)
        return start, path

    def _check_resumable(self, state: dict, path: str) -> None:
        cfg = self.cfg
        if cfg.fsdp != bool(state.get("fsdp", False)):
            raise ckpt_io.CheckpointError(
                f"mdfast: checkpoint {path} was written with fsdp={state.get('fsdp', False)}"
                f", this run uses fsdp={cfg.fsdp}"
            )
        if state["data"].get("global_batch") != cfg.batch_size:
            raise ckpt_io.CheckpointError(
                f"mdfast: checkpoint {path} was written with batch_size "
                f"{state['data'].get('global_batch')}, this run uses {cfg.batch_size}"
            )

    def _load_training_state(self, state: dict) -> None:
        if self.cfg.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            opts = runtime.full_state_dict_options()
            set_model_state_dict(self.objective, state["model"], options=opts)
            set_optimizer_state_dict(self.objective, self.opt, state["optimizer"], options=opts)
        else:
            self.objective.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])

    def _restore_fallback_rngs(self, rngs: list, start: int) -> None:
        if len(rngs) == self.world:
            runtime.set_rng_state(rngs[self.rank], self.dev)
            return
        if self.rank == 0:
            print(
                f"mdfast: checkpoint has RNG states for {len(rngs)} ranks, running {self.world}: "
                "reseeding torch's generator (keyed noise is unaffected)",
                file=sys.stderr,
            )
        runtime.seed_fallback_rngs(self.cfg.seed, self.rank, start)

    def _wrap(self) -> nn.Module:
        model: nn.Module = self.objective
        if self.world > 1 and not self.cfg.fsdp:
            model = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.dev.index] if self.dev.type == "cuda" else None
            )
        if self.cfg.compile:
            model = torch.compile(model)
        return model

    # -- one step ------------------------------------------------------------------------------

    def _noise_key(self, step: int, micro: int) -> rng.NoiseKey:
        index = self.data.batch_positions(step, micro)
        return rng.NoiseKey(self.cfg.seed, step, index, self.cfg.batch_size)

    def _sync_context(self, micro: int):
        """Gradient all-reduce only on the last micro-batch."""
        sync = micro == self.cfg.grad_accum - 1 or self.world == 1
        if self.cfg.fsdp:
            self.objective.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if sync else self.model.no_sync()

    def _forward_backward(self, step: int) -> _StepTotals:
        cfg = self.cfg
        autocast = (
            torch.autocast(self.dev.type, dtype=torch.bfloat16)
            if cfg.precision == "bf16"
            else contextlib.nullcontext()
        )
        totals = _StepTotals(torch.zeros((), device=self.dev, dtype=torch.float64), {})
        for micro in range(cfg.grad_accum):
            batch = _to(self.data.get(step, micro), self.dev)
            totals.samples += self.data.micro
            totals.tokens += _count_tokens(batch)
            with self._sync_context(micro), rng.noise_key(self._noise_key(step, micro)):
                with _nvtx("forward", self.nvtx), autocast:
                    loss, metrics = self.model(batch)
                with _nvtx("backward", self.nvtx):
                    (loss / cfg.grad_accum).backward()
            totals.loss += loss.detach().double()
            for k, v in (metrics or {}).items():
                v = torch.as_tensor(v, device=self.dev, dtype=torch.float64).detach()
                totals.metrics[k] = totals.metrics.get(k, 0) + v
        return totals

    def _global_loss(self, totals: _StepTotals, step: int) -> float:
        """The step's loss averaged over micro-batches and ranks; raises if it is not finite."""
        loss = totals.loss / self.cfg.grad_accum
        if self.world > 1:
            dist.all_reduce(loss)
            loss /= self.world
        value = float(loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"mdfast: non-finite loss ({value}) at step {step + 1}; stopped before the "
                f"optimiser step. Last checkpoint: {self.last_ckpt or 'none'} (intact)"
            )
        return value

    def _optimizer_step(self) -> torch.Tensor:
        """Clip, step, schedule, zero the gradients, update the EMA; returns the grad norm."""
        with _nvtx("optimizer", self.nvtx):
            clip = self.cfg.clip
            gnorm = (
                torch.nn.utils.clip_grad_norm_(self.params, clip) if clip > 0 else torch.zeros(())
            )
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update()
        return gnorm

    def _log_row(self, done: int, loss: float, lr: float, gnorm, totals: _StepTotals, dt: float):
        row = {
            "step": done,
            "loss": loss,
            "lr": lr,
            "grad_norm": float(gnorm),
            "samples_per_s": totals.samples * self.world / dt,
        }
        if totals.tokens:
            row["tokens_per_s"] = totals.tokens * self.world / dt
        for k, v in totals.metrics.items():
            row[k] = float(v / self.cfg.grad_accum)
        return row

    # -- checkpoints ---------------------------------------------------------------------------

    def _save(self, step: int) -> str | None:
        """Write the checkpoint of ``step`` (collective: every rank calls it); rank 0's path."""
        cfg = self.cfg
        rngs = [runtime.rng_state(self.dev)]
        if self.world > 1:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if cfg.fsdp:  # collective: every rank takes part in gathering the full state
            from torch.distributed.checkpoint.state_dict import (
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = runtime.full_state_dict_options(cpu_offload=True)
            model_sd = get_model_state_dict(self.objective, options=opts)
            opt_sd = get_optimizer_state_dict(self.objective, self.opt, options=opts)
        ema_sd = self.ema.state_dict() if self.ema is not None else None
        path = None
        if self.rank == 0:
            if not cfg.fsdp:
                model_sd = runtime.unwrap(self.objective).state_dict()
                opt_sd = self.opt.state_dict()
            state = {
                "model": model_sd,
                "ema": ema_sd,
                "optimizer": opt_sd,
                "fsdp": cfg.fsdp,
                "scheduler": self.sched.state_dict(),
                "step": step,
                "rng": rngs,
                "data": {
                    "seed": cfg.seed,
                    "global_batch": cfg.batch_size,
                    "position": self.data.position(step),
                },
                "config": self.full_config
                if self.full_config is not None
                else {"train": asdict(cfg)},
                "world_size": self.world,
            }
            path = ckpt_io.save(state, cfg.out_dir, step, cfg.keep_ckpts)
        if self.world > 1:
            dist.barrier()
        return path

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> dict:
        cfg = self.cfg
        logs = RunLog(cfg, self.start, enabled=self.rank == 0)
        bar = Progress(cfg.steps, enabled=self.rank == 0 and cfg.progress)
        losses: list[float] = []
        self.objective.train()
        try:
            for step in range(self.start, cfg.steps):
                t0 = time.perf_counter()
                totals = self._forward_backward(step)
                loss = self._global_loss(totals, step)
                lr_used = self.opt.param_groups[0]["lr"]  # the rate this step used
                gnorm = self._optimizer_step()
                done = step + 1
                losses.append(loss)
                dt = time.perf_counter() - t0
                if self.rank == 0 and (done % cfg.log_every == 0 or done in (1, cfg.steps)):
                    logs.write(self._log_row(done, loss, lr_used, gnorm, totals, dt))
                bar.update(done, loss, totals.samples * self.world, totals.tokens * self.world,
                           force=done % cfg.log_every == 0)  # fmt: skip
                if done % cfg.ckpt_every == 0 or done == cfg.steps:
                    self.last_ckpt = self._save(done) or self.last_ckpt
        finally:
            bar.close()
            logs.close()
        return {"step": cfg.steps, "losses": losses, "checkpoint": self.last_ckpt, "ema": self.ema}


def train(objective: nn.Module, dataset, cfg: TrainConfig, *, full_config: dict | None = None):
    """Train ``objective`` on ``dataset``; returns ``{"step", "losses", "checkpoint", "ema"}``.

    ``losses`` are the per-step global mean losses of this invocation (all ranks agree).
    """
    with runtime.deterministic_kernels(cfg.deterministic):
        return _Run(objective, dataset, cfg, full_config).run()
