"""Shared benchmark machinery: timing, peak memory, CSV rows and plots.

Every benchmark measures mdfast against baselines in the same process, records medians with the
20th/80th percentiles, and appends rows (with device, versions and commit) to
``bench/results/<name>.csv``; :func:`plot` turns a CSV into a PNG beside it.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the starting allocation; on CPU,
the process's peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) above its
resident size before the call. glibc's malloc is told to hand large blocks straight back to the
OS, so freed tensors do not hide a later peak.
"""

from __future__ import annotations

import csv
import ctypes
import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

import mdfast

RESULTS = Path(__file__).resolve().parent / "results"

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
try:  # allocations >= 64 KiB get their own mapping and are unmapped when freed
    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    _libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
except OSError:  # not glibc: CPU peaks become rougher, nothing else changes
    _libc = None


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and the 20th / 80th percentiles over ``repeat`` calls."""

    median: float
    p20: float
    p80: float
    repeat: int

    def ratio_to(self, baseline: Timing) -> float:
        """How many times faster this is than ``baseline`` (median over median)."""
        return baseline.median / self.median


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _quantile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    repeat: int = 10,
    device: torch.device | str | None = None,
    max_seconds: float | None = None,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeat`` timed calls (fewer if
    ``max_seconds`` of timed calls have passed, but at least 3). CUDA work is synchronised."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    started = time.perf_counter()
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and i >= 2 and time.perf_counter() - started > max_seconds:
            break
    times.sort()
    median = statistics.median(times)
    return Timing(median, _quantile(times, 0.2), _quantile(times, 0.8), len(times))


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Extra memory at the peak of one ``fn()`` call, above what was allocated before it.
    Whatever ``fn`` returns is dropped before the measurement ends."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        del out
        return int(peak)
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    before = _proc_status_kib("VmRSS")
    out = fn()
    peak = _proc_status_kib("VmHWM") - before
    del out
    return max(0, peak) * 1024


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def context_columns(device: torch.device | str) -> dict:
    """Columns every row carries: where and with what it was measured."""
    return {
        "device": device_name(device),
        "device_type": torch.device(device).type,
        "torch": torch.__version__,
        "mdfast": mdfast.__version__,
        "commit": _git_commit(),
        "threads": torch.get_num_threads(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def timing_columns(t: Timing) -> dict:
    return {
        "median_ms": round(t.median * 1e3, 4),
        "p20_ms": round(t.p20 * 1e3, 4),
        "p80_ms": round(t.p80 * 1e3, 4),
        "repeat": t.repeat,
    }


def write_rows(csv_path: Path | str, rows: Iterable[dict]) -> Path:
    """Append ``rows`` to ``csv_path`` (under bench/results/ if relative). The header is the union
    of old and new columns, so benchmarks may add columns without losing earlier runs."""
    path = Path(csv_path)
    if not path.is_absolute():
        path = RESULTS / path
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in rows]
    old: list[dict] = []
    if path.exists():
        with open(path, newline="") as f:
            old = list(csv.DictReader(f))
    fields: list[str] = []
    for r in [*old, *rows]:
        for k in r:
            if k not in fields:
                fields.append(k)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(old + rows)
    tmp.replace(path)
    return path


def plot(
    csv_path: Path | str,
    png_path: Path | str | None = None,
    *,
    label_cols: list[str],
    provider_col: str = "provider",
    value_col: str = "median_ms",
    title: str = "",
    where: Callable[[dict], bool] | None = None,
    log: bool = True,
) -> Path:
    """Grouped horizontal bars: one group per distinct ``label_cols`` value (latest commit's rows
    per device type), one bar per provider. Returns the PNG path (default: beside the CSV)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(csv_path)
    if not path.is_absolute():
        path = RESULTS / path
    png = Path(png_path) if png_path else path.with_suffix(".png")
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if where is None or where(r)]
    if not rows:
        raise ValueError(f"no rows to plot in {path}")
    latest: dict[tuple, dict] = {}  # last row wins per (label, provider, device type)
    for r in rows:
        key = (tuple(r.get(c, "") for c in label_cols), r[provider_col], r.get("device_type", ""))
        latest[key] = r
    labels = sorted({(*k[0], k[2]) for k in latest}, key=str)
    providers = sorted({k[1] for k in latest})
    height = 0.8 / max(1, len(providers))
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.35 * len(labels) * max(1, len(providers)) ** 0.5))
    for j, prov in enumerate(providers):
        ys, xs = [], []
        for i, lab in enumerate(labels):
            r = latest.get((lab[:-1], prov, lab[-1]))
            if r is not None and r.get(value_col) not in (None, ""):
                ys.append(i + j * height)
                xs.append(float(r[value_col]))
        ax.barh(ys, xs, height=height, label=prov)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))])
    ax.set_yticklabels([" ".join(str(x) for x in lab) for lab in labels], fontsize=7)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(value_col)
    ax.set_title(title or path.stem)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
