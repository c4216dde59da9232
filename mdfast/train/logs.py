"""What a training run reports: a progress line on stderr, ``log.csv``, TensorBoard and wandb.

:class:`Progress` prints ``[#####...] step/total loss | samples/s | tok/s`` (redrawn in place on a
terminal, one line per ``log_every`` steps otherwise). :class:`RunLog` appends one row per logged
step to ``<out_dir>/log.csv`` (after dropping rows a killed run logged past the checkpoint it
resumes from) and mirrors the float fields to TensorBoard and wandb when they are enabled and
importable.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import asdict

__all__ = ["Progress", "RunLog", "progress_bar"]


def progress_bar(total: int, desc: str, unit: str, enabled: bool, *, initial: int = 0,
                 leave: bool = True):  # fmt: skip
    """A tqdm bar on stderr, or None when disabled or tqdm is missing."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, leave=leave)


class Progress:
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


class RunLog:
    def __init__(self, cfg, resume_step: int, enabled: bool):
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
