"""One trainer for every experiment.

``train(objective, dataset, cfg)`` runs ``cfg.steps`` optimiser steps of ``objective`` (an
``nn.Module`` whose ``forward(batch)`` returns ``(loss, metrics)``, see
:mod:`mdfast.diffusion.base`) on ``dataset``.

- Launch: plain ``python`` (one process) or ``torchrun --nproc_per_node=N`` (DDP; ``gloo`` on CPU,
  ``nccl`` on GPU). The global batch ``cfg.batch_size`` is split across ranks and
  ``cfg.grad_accum`` micro-batches (see :mod:`mdfast.train.data`), so results do not depend on
  the split (up to float summation order).
- bf16 autocast (``precision="bf16"``), gradient clipping, linear warm-up then constant or cosine
  LR, EMA, optional ``torch.compile``.
- Checkpoints (atomic, see :mod:`mdfast.train.checkpoint`) hold the objective's state, EMA,
  optimiser, LR scheduler, step, every rank's RNG states and the data position; ``resume``
  (``"auto"`` = latest in ``out_dir``, or a path) continues exactly.
- Logs: a progress line (loss, samples/s, tokens/s) on rank 0, ``log.csv`` in ``out_dir``,
  TensorBoard when ``torch.utils.tensorboard`` imports, wandb when ``cfg.wandb`` and installed.
- ``MDFAST_NVTX=1`` wraps forward/backward/step in NVTX ranges (CUDA only).
- A non-finite loss raises :class:`NonFiniteLossError` with the step number before the optimiser
  step; no checkpoint is written, so the last one stays intact.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mdfast.train import checkpoint as ckpt_io
from mdfast.train.data import StepBatches
from mdfast.train.ema import EMA

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


# ---------------------------------------------------------------------------------------------


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


def _rng_state(dev: torch.device) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
    }


def _set_rng_state(state: dict, dev: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], dev)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.samples = 0
        self.tokens = 0

    def update(self, step, loss, samples, tokens, force=False):
        self.samples += samples
        self.tokens += tokens
        if not self.enabled or not (self.tty or force):
            return
        dt = max(time.perf_counter() - self.t0, 1e-9)
        width = 24
        done = int(width * step / max(1, self.total))
        bar = "#" * done + "." * (width - done)
        msg = (
            f"[{bar}] {step}/{self.total} loss {loss:.4f} | {self.samples / dt:,.1f} samples/s"
            + (f" | {self.tokens / dt:,.0f} tok/s" if self.tokens else "")
        )
        sys.stderr.write(("\r" + msg) if self.tty else (msg + "\n"))
        sys.stderr.flush()

    def close(self):
        if self.enabled and self.tty:
            sys.stderr.write("\n")


class _Logs:
    def __init__(self, cfg: TrainConfig, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(cfg.out_dir, "log.csv")
        self.fields: list[str] | None = None
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        os.makedirs(cfg.out_dir, exist_ok=True)
        if os.path.exists(self.path):
            # drop rows logged after the checkpoint we resume from (a killed run's tail)
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows:
                self.fields = list(rows[0].keys())
            # a row torn by a kill has missing fields: drop it with the rows after the resume
            keep = [
                r
                for r in rows
                if None not in r.values() and "" not in r.values() and int(r["step"]) <= resume_step
            ]
            with open(self.path, "w", newline="") as f:
                if self.fields:
                    w = csv.DictWriter(f, fieldnames=self.fields)
                    w.writeheader()
                    w.writerows(keep)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(cfg.out_dir, "tb"))
            except Exception:
                self.tb = None
        if cfg.wandb:
            try:
                import wandb

                self.wandb = wandb.init(project="mdfast", config=asdict(cfg), dir=cfg.out_dir)
            except Exception:
                self.wandb = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writeheader()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)
        step = row["step"]
        for k, v in row.items():
            if k != "step" and isinstance(v, float):
                if self.tb is not None:
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _nvtx(name: str, on: bool):
    return torch.cuda.nvtx.range(name) if on else contextlib.nullcontext()


def _unwrap(m: nn.Module) -> nn.Module:
    m = getattr(m, "_orig_mod", m)
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def _apply_fsdp(objective: nn.Module, world: int) -> None:
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


def train(objective: nn.Module, dataset, cfg: TrainConfig, *, full_config: dict | None = None):
    """Train ``objective`` on ``dataset``; returns ``{"step", "losses", "checkpoint"}``.

    ``losses`` are the per-step global mean losses of this invocation (all ranks agree).
    """
    rank, world, dev = setup_distributed(cfg.device)
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"mdfast: unknown precision '{cfg.precision}'; valid: ['bf16', 'fp32']")
    lr_lambda(cfg)(0)  # validates lr_schedule
    if cfg.micro_batch_size > 0:
        cfg.grad_accum = max(1, cfg.batch_size // (world * cfg.micro_batch_size))
    objective.to(dev)
    if cfg.fsdp:
        _apply_fsdp(objective, world)
    data = StepBatches(dataset, cfg.batch_size, cfg.grad_accum, rank, world, cfg.seed)
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    ema = EMA(objective, cfg.ema, cfg.ema_warmup) if cfg.ema > 0 else None

    start = 0
    resume_path = None
    if cfg.resume:
        resume_path = ckpt_io.latest_checkpoint(cfg.out_dir) if cfg.resume == "auto" else cfg.resume
    if resume_path:
        state = ckpt_io.load(resume_path)
        if cfg.fsdp != bool(state.get("fsdp", False)):
            raise ckpt_io.CheckpointError(
                f"mdfast: checkpoint {resume_path} was written with fsdp={state.get('fsdp', False)}"
                f", this run uses fsdp={cfg.fsdp}"
            )
        if cfg.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(objective, state["model"], options=opts)
            set_optimizer_state_dict(objective, opt, state["optimizer"], options=opts)
        else:
            objective.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        start = int(state["step"])
        if state["data"].get("global_batch") != cfg.batch_size:
            raise ckpt_io.CheckpointError(
                f"mdfast: checkpoint {resume_path} was written with batch_size "
                f"{state['data'].get('global_batch')}, this run uses {cfg.batch_size}"
            )
        rngs = state["rng"]
        if len(rngs) == world:
            _set_rng_state(rngs[rank], dev)
        else:
            if rank == 0:
                print(
                    f"mdfast: checkpoint has RNG states for {len(rngs)} ranks, running {world}: "
                    "reseeding (resume is not bit-exact)",
                    file=sys.stderr,
                )
            torch.manual_seed(cfg.seed * 7919 + start * 31 + rank)
    else:
        torch.manual_seed(cfg.seed * 7919 + rank)
        random.seed(cfg.seed + rank)
        np.random.seed((cfg.seed + rank) % 2**32)  # noqa: NPY002

    model: nn.Module = objective
    if world > 1 and not cfg.fsdp:
        model = nn.parallel.DistributedDataParallel(
            objective, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if cfg.compile:
        model = torch.compile(model)

    nvtx_on = os.environ.get("MDFAST_NVTX", "0") == "1" and dev.type == "cuda"
    autocast = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if cfg.precision == "bf16"
        else contextlib.nullcontext()
    )
    logs = _Logs(cfg, start, enabled=rank == 0)
    bar = _Progress(cfg.steps, enabled=rank == 0 and cfg.progress)
    losses: list[float] = []
    last_ckpt = resume_path
    objective.train()

    def save(step: int) -> str | None:
        rng = [_rng_state(dev)]
        if world > 1:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        path = None
        if cfg.fsdp:  # collective: every rank takes part in gathering the full state
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_sd = get_model_state_dict(objective, options=opts)
            opt_sd = get_optimizer_state_dict(objective, opt, options=opts)
        else:
            model_sd = opt_sd = None
        ema_sd = ema.state_dict() if ema is not None else None
        if rank == 0:
            state = {
                "model": model_sd if cfg.fsdp else _unwrap(objective).state_dict(),
                "ema": ema_sd,
                "optimizer": opt_sd if cfg.fsdp else opt.state_dict(),
                "fsdp": cfg.fsdp,
                "scheduler": sched.state_dict(),
                "step": step,
                "rng": rng,
                "data": {
                    "seed": cfg.seed,
                    "global_batch": cfg.batch_size,
                    "position": data.position(step),
                },
                "config": full_config if full_config is not None else {"train": asdict(cfg)},
                "world_size": world,
            }
            path = ckpt_io.save(state, cfg.out_dir, step, cfg.keep_ckpts)
        if world > 1:
            dist.barrier()
        return path

    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
            metric_sum: dict[str, torch.Tensor] = {}
            n_samples = n_tokens = 0
            for micro in range(cfg.grad_accum):
                batch = _to(data.get(step, micro), dev)
                n_samples += data.micro
                n_tokens += _count_tokens(batch)
                sync = micro == cfg.grad_accum - 1 or world == 1
                if cfg.fsdp:
                    objective.set_requires_gradient_sync(sync)
                    ctx = contextlib.nullcontext()
                else:
                    ctx = contextlib.nullcontext() if sync else model.no_sync()
                with ctx:
                    with _nvtx("forward", nvtx_on), autocast:
                        loss, metrics = model(batch)
                    with _nvtx("backward", nvtx_on):
                        (loss / cfg.grad_accum).backward()
                loss_sum += loss.detach().double()
                for k, v in (metrics or {}).items():
                    v = torch.as_tensor(v, device=dev, dtype=torch.float64).detach()
                    metric_sum[k] = metric_sum.get(k, 0) + v
            loss_val = loss_sum / cfg.grad_accum
            if world > 1:
                dist.all_reduce(loss_val)
                loss_val /= world
            loss_f = float(loss_val)
            if not math.isfinite(loss_f):
                raise NonFiniteLossError(
                    f"mdfast: non-finite loss ({loss_f}) at step {step + 1}; stopped before the "
                    f"optimiser step. Last checkpoint: {last_ckpt or 'none'} (intact)"
                )
            lr_used = opt.param_groups[0]["lr"]  # the rate this step used
            with _nvtx("optimizer", nvtx_on):
                gnorm = (
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                    if cfg.clip > 0
                    else torch.zeros(())
                )
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update()
            done = step + 1
            losses.append(loss_f)
            dt = time.perf_counter() - t0
            if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps or done == 1):
                row = {
                    "step": done,
                    "loss": loss_f,
                    "lr": lr_used,
                    "grad_norm": float(gnorm),
                    "samples_per_s": n_samples * world / dt,
                }
                if n_tokens:
                    row["tokens_per_s"] = n_tokens * world / dt
                for k, v in metric_sum.items():
                    row[k] = float(v / cfg.grad_accum)
                logs.write(row)
            bar.update(
                done, loss_f, n_samples * world, n_tokens * world, force=done % cfg.log_every == 0
            )
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                last_ckpt = save(done) or last_ckpt
    finally:
        bar.close()
        logs.close()
    return {"step": cfg.steps, "losses": losses, "checkpoint": last_ckpt, "ema": ema}
