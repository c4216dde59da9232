"""Shared benchmark machinery: timing, peak memory, hardware floors, CSV rows and plots.

Every benchmark measures mdfast against baselines in the same process, records medians with the
20th/80th percentiles, and appends rows (with device, versions and commit) to
``bench/results/<name>.csv`` (``MDFAST_BENCH_RESULTS=DIR`` writes them to DIR instead);
:func:`plot` turns a CSV into a PNG beside it.

Timing: on CUDA each repetition is bracketed by CUDA events after a synchronisation (so a call's
host-side launch and sync costs are inside its time, and repetitions never overlap); on CPU by
``perf_counter``. Warm-up calls come first (compilation, cuBLAS handles, allocator growth).

Floors: :func:`ceilings` measures, once per process and device, the copy bandwidth (a large
device-to-device copy, bytes read + written) and the matrix-product peak (bf16 8192^3 on CUDA),
and reads the theoretical bandwidth from the device (:mod:`mdfast.device_info`).
:func:`floor_columns` turns a row's bytes / FLOPs into ``floor_ms = max(bytes / bandwidth,
flops / peak)`` and ``frac_of_floor = floor_ms / median_ms``.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the starting allocation; on CPU,
the process's peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) above its
resident size before the call. glibc's malloc is told to hand large blocks straight back to the
OS, so freed tensors do not hide a later peak.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import datetime
import functools
import gc
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

RESULTS = Path(
    os.environ.get("MDFAST_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)

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


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``: every benchmark's ``--device`` default."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default=default_device(),
        type=_device_arg,
        help="cpu or cuda (default: cuda when a GPU is visible); shapes default per device",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-write", action="store_true", help="print rows, write no CSV")
    parser.add_argument("--no-plot", action="store_true", help="write rows but no plot")


def writes_results(args: argparse.Namespace) -> bool:
    """Whether a run writes its rows: not with ``--no-write``, and a ``--quick`` smoke run only
    into an explicit ``MDFAST_BENCH_RESULTS`` folder (never into bench/results/)."""
    if args.no_write:
        return False
    return not getattr(args, "quick", False) or bool(os.environ.get("MDFAST_BENCH_RESULTS"))


def _device_arg(value: str) -> str:
    dev = torch.device(value)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"--device {value}: no CUDA device is visible")
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"--device {value}: only cpu and cuda are benchmarked")
    return str(dev)


def is_cuda(device: torch.device | str | None) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _sync(device: torch.device | str | None) -> None:
    if is_cuda(device):
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
    ``max_seconds`` of timed calls have passed, but at least 3). On CUDA each call is timed by
    CUDA events recorded after a synchronisation, so host overhead and syncs inside ``fn`` count
    and calls do not overlap."""
    cuda = is_cuda(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    started = time.perf_counter()
    for i in range(repeat):
        if cuda:
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if max_seconds is not None and i >= 2 and time.perf_counter() - started > max_seconds:
            break
    times.sort()
    median = statistics.median(times)
    return Timing(median, _quantile(times, 0.2), _quantile(times, 0.8), len(times))


@dataclass(frozen=True)
class Ceilings:
    """What the device can do, measured in this process: ``copy_bandwidth`` (bytes/s, read +
    write, of a large copy), ``matmul_flops`` (FLOP/s of a large product in ``matmul_dtype``) and
    the ``theoretical_bandwidth`` from the device's attributes (None on CPU)."""

    copy_bandwidth: float
    matmul_flops: float
    matmul_dtype: str
    matmul_size: int
    theoretical_bandwidth: float | None

    def floor_seconds(self, nbytes: float = 0.0, flops: float = 0.0) -> tuple[float, str]:
        """``max(nbytes / copy_bandwidth, flops / matmul_flops)`` and which term it is."""
        t_bytes = nbytes / self.copy_bandwidth
        t_flops = flops / self.matmul_flops
        return (t_bytes, "bytes") if t_bytes >= t_flops else (t_flops, "flops")

    def columns(self) -> dict:
        bw = self.theoretical_bandwidth
        return {
            "copy_GBps": round(self.copy_bandwidth / 1e9, 1),
            "theoretical_GBps": "" if bw is None else round(bw / 1e9, 1),
            "copy_over_theoretical": "" if bw is None else round(self.copy_bandwidth / bw, 3),
            "matmul_TFLOPs": round(self.matmul_flops / 1e12, 2),
            "matmul_dtype": self.matmul_dtype,
        }


def _time_copy(dev: torch.device, numel: int, repeat: int) -> Timing:
    src = torch.rand(numel, generator=torch.Generator(device=dev).manual_seed(0), device=dev)
    dst = torch.empty_like(src)
    return measure(lambda: dst.copy_(src), warmup=3, repeat=repeat, device=dev)


def _time_matmul(dev: torch.device, size: int, dtype: torch.dtype, repeat: int) -> Timing:
    g = torch.Generator(device=dev).manual_seed(1)
    a = torch.randn(size, size, generator=g, device=dev).to(dtype)
    b = torch.randn(size, size, generator=g, device=dev).to(dtype)
    out = torch.empty(size, size, device=dev, dtype=dtype)
    return measure(lambda: torch.mm(a, b, out=out), warmup=3, repeat=repeat, device=dev)


@functools.cache
def ceilings(device: str) -> Ceilings:
    """Measure the device's copy bandwidth and matrix-product rate (cached per process): on CUDA a
    1 GiB device-to-device copy and a bf16 8192^3 product on random data; on CPU a 256 MiB copy
    and a float32 1024^3 product (``torch.get_num_threads()`` threads)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    numel = (2**30 if cuda else 2**28) // 4
    copy_bw = 2 * numel * 4 / _time_copy(dev, numel, repeat=20 if cuda else 5).median
    size, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
    flops = 2 * size**3 / _time_matmul(dev, size, dtype, repeat=10 if cuda else 3).median
    theoretical = None
    if cuda:
        from mdfast import device_info

        info = device_info.cuda_device(dev.index)
        if info and info["theoretical_bandwidth_gbps"]:
            theoretical = info["theoretical_bandwidth_gbps"] * 1e9
        torch.cuda.empty_cache()
    return Ceilings(copy_bw, flops, str(dtype).removeprefix("torch."), size, theoretical)


def floor_columns(
    t: Timing, ceil: Ceilings | None, *, nbytes: float = 0.0, flops: float = 0.0
) -> dict:
    """The floor of a row from the fewest bytes it must move and the FLOPs it must do:
    ``floor_ms``, ``floor_bound`` (bytes or flops), ``frac_of_floor`` (floor / median: 1 is the
    hardware limit), the achieved GB/s and TFLOP/s, and the device ceilings used. Empty values
    without ``ceil``."""
    cols = {"floor_bytes": int(nbytes), "floor_flops": int(flops)}
    if ceil is None:
        return {**cols, "floor_ms": "", "floor_bound": "", "frac_of_floor": ""}
    floor, bound = ceil.floor_seconds(nbytes, flops)
    return {
        **cols,
        "floor_ms": round(floor * 1e3, 4),
        "floor_bound": bound,
        "frac_of_floor": round(floor / t.median, 4),
        "achieved_GBps": round(nbytes / t.median / 1e9, 1),
        "achieved_TFLOPs": round(flops / t.median / 1e12, 2),
        **ceil.columns(),
    }


def dit_forward_flops(config, batch: int, length: int, head_rows: int | None = None) -> float:
    """Matrix FLOPs of one forward pass of MDLM's DiT (``mdfast.models.DiTConfig``) on
    ``batch`` x ``length`` tokens: per block the qkv / out / MLP products (2 x 12 D^2 per token,
    at mlp_ratio 4) and attention (4 L D per token), plus the output head on ``head_rows`` rows
    (default all) at 2 D V each. Backward costs twice the forward."""
    d, blocks = config.hidden_dim, config.n_blocks
    tokens = batch * length
    per_token = blocks * (2 * (4 + 2 * config.mlp_ratio) * d * d + 4 * length * d)
    rows = tokens if head_rows is None else head_rows
    return float(tokens * per_token + rows * 2 * d * config.vocab_size)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


@contextlib.contextmanager
def peak_tracker(device: torch.device | str = "cpu"):
    """``with peak_tracker(device) as mem: ...`` sets ``mem["peak"]`` to the extra memory (bytes)
    at the peak of the block, above what was allocated when it began. Reading it costs nothing
    inside the block, so one timed call can also give its peak."""
    device = torch.device(device)
    mem: dict = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield mem
        torch.cuda.synchronize()
        mem["peak"] = max(0, int(torch.cuda.max_memory_allocated() - before))
        return
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    before = _proc_status_kib("VmRSS")
    yield mem
    mem["peak"] = max(0, _proc_status_kib("VmHWM") - before) * 1024


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Extra memory at the peak of one ``fn()`` call, above what was allocated before it.
    Whatever ``fn`` returns is dropped before the measurement ends."""
    with peak_tracker(device) as mem:
        out = fn()
        del out
    return mem["peak"]


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


@functools.cache
def _git_commit() -> str:
    """The checkout's short commit (``+dirty`` with uncommitted changes); ``MDFAST_COMMIT``
    overrides it (a copy of the tree without ``.git``, as on a lent GPU machine)."""
    if os.environ.get("MDFAST_COMMIT"):
        return os.environ["MDFAST_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty", "--abbrev=7"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_RUN_ID = os.environ.get("MDFAST_BENCH_RUN") or datetime.datetime.now(
    datetime.timezone.utc
).strftime("%Y%m%dT%H%M%S")


def context_columns(device: torch.device | str) -> dict:
    """Columns every row carries: where and with what it was measured."""
    cuda = torch.device(device).type == "cuda"
    return {
        "device": device_name(device),
        "device_type": torch.device(device).type,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if cuda else "",
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "" if cuda else "",
        "mdfast": mdfast.__version__,
        "commit": _git_commit(),
        "run": _RUN_ID,
        "threads": torch.get_num_threads(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


ROLES = ("mdfast", "baseline", "info")


def result_row(
    bench: str,
    case: str,
    provider: str,
    role: str,
    t: Timing | None,
    device: torch.device | str,
    *,
    peak_bytes: int | None = None,
    ceil: Ceilings | None = None,
    nbytes: float = 0.0,
    flops: float = 0.0,
    note: str = "",
    **shape,
) -> dict:
    """One CSV row: ``bench`` (what is measured), ``case`` (its shape, one string), ``provider``
    and its ``role`` (``mdfast``, ``baseline`` or ``info``: the summary compares the fastest
    mdfast row of a case with its fastest baseline), the timing, the peak memory, the floor
    columns when ``ceil`` is given, the shape columns and the context. ``t=None`` records a
    provider that could not run (``note`` says why)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    row: dict = {"bench": bench, "case": case, "provider": provider, "role": role, **shape}
    if t is not None:
        row.update(timing_columns(t))
        if peak_bytes is not None:
            row["peak_mem_mb"] = round(peak_bytes / 2**20, 1)
        if nbytes or flops:
            row.update(floor_columns(t, ceil, nbytes=nbytes, flops=flops))
    row["note"] = note
    return {**row, **context_columns(device)}


def measure_row(
    bench: str,
    case: str,
    provider: str,
    role: str,
    fn: Callable[[], object],
    device: torch.device | str,
    *,
    warmup: int,
    repeat: int,
    max_seconds: float | None = None,
    ceil: Ceilings | None = None,
    nbytes: float = 0.0,
    flops: float = 0.0,
    **shape,
) -> dict:
    """Time ``fn`` (:func:`measure`), then measure the peak memory of one more call, and return
    its :func:`result_row` (also printed)."""
    t = measure(fn, warmup=warmup, repeat=repeat, device=device, max_seconds=max_seconds)
    gc.collect()
    peak = peak_memory_bytes(fn, device)
    row = result_row(
        bench, case, provider, role, t, device,
        peak_bytes=peak, ceil=ceil, nbytes=nbytes, flops=flops, **shape,
    )  # fmt: skip
    print_row(row)
    return row


def skipped_row(bench: str, case: str, provider: str, why: str, device, **shape) -> dict:
    """The row (also printed) of a peer that could not run here, saying why."""
    row = result_row(bench, case, provider, "baseline", None, device, note=why, **shape)
    print_row(row)
    return row


def print_row(row: dict) -> None:
    """One line per row on stdout (the benchmark's progress)."""
    head = f"{row['bench']:>14s} | {row['case']} | {row['provider']:24s}"
    if row.get("median_ms") in (None, ""):
        print(f"{head} skipped: {row['note']}", flush=True)
        return
    line = f"{head} {row['median_ms']:10.3f} ms"
    if row.get("peak_mem_mb") not in (None, ""):
        line += f"  peak {row['peak_mem_mb']:9.1f} MiB"
    if row.get("frac_of_floor") not in (None, ""):
        line += f"  {100 * row['frac_of_floor']:5.1f}% of floor ({row['floor_bound']})"
    print(line, flush=True)


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


def plot_cases(csv_path: Path | str, title: str) -> Path:
    """:func:`plot` of a benchmark CSV: one group of bars per (bench, case) and device type, the
    latest row of each provider, rows without a timing left out."""
    return plot(
        csv_path,
        label_cols=["bench", "case"],
        title=title,
        where=lambda r: r.get("median_ms") not in (None, "") and bool(r.get("case")),
    )
