"""Peak resident memory of `mdfast train` on a multi-GB prepared token file.

Writes a prepared split of random GPT-2 ids (uint16, L = 1024) of ``--gb`` gigabytes and, for
comparison, one of 64 MB, then trains the OWT MDLM preset with a tiny DiT for a few steps on
each in a child process and records the child's peak RSS (``ru_maxrss``). With the token file
memory-mapped and rows gathered per batch, the peak does not grow with the file; the former
``load_tokens`` path read the whole array and widened it to int64 (4 × the file size).
Rows go to ``bench/results/text_memory.csv``.

    python -m bench.text_memory --gb 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.common import RESULTS, context_columns, write_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_split(path: str, n_bytes: int, length: int = 1024) -> int:
    os.makedirs(path, exist_ok=True)
    rows = n_bytes // (2 * length)
    rng = np.random.default_rng(0)
    with open(os.path.join(path, "train.bin"), "wb") as f:
        for start in range(0, rows, 16384):
            n = min(16384, rows - start)
            f.write(rng.integers(0, 50257, (n, length), dtype=np.uint16).tobytes())
    header = {"format": "mdfast-tokens/1", "split": "train", "rows": rows, "length": length,
              "dtype": "uint16", "layout": "wrap", "vocab_size": 50257,
              "model_vocab_size": 50258, "mask_id": 50257, "bos_id": 50256, "eos_id": 50256,
              "pad_id": 50256, "max_id": 50256, "num_tokens": rows * length}  # fmt: skip
    with open(os.path.join(path, "train.json"), "w") as f:
        json.dump(header, f)
    return rows


def _train_peak_rss(data: str, out: str, steps: int) -> tuple[int, float]:
    """(peak RSS in bytes, wall seconds) of a child `mdfast train` process."""
    cmd = [sys.executable, "-m", "mdfast.cli", "train", "mdlm-owt-small", "model.preset=tiny",
           "model.vocab_size=50258", f"data.path={data}", "train.batch_size=8",
           "train.micro_batch_size=0", f"train.steps={steps}", "train.precision=fp32",
           "train.progress=false", "train.tensorboard=false", f"train.out_dir={out}"]  # fmt: skip
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"mdfast train failed ({status})")
    return usage.ru_maxrss * 1024, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--dir", default="", help="scratch directory (default: a temp dir)")
    a = p.parse_args(argv)
    root = a.dir or tempfile.mkdtemp(prefix="mdfast-text-memory-")
    rows = []
    for label, size in (("64MB", 64 * 2**20), (f"{a.gb:g}GB", int(a.gb * 2**30))):
        data = os.path.join(root, label)
        n_rows = _write_split(data, size)
        peak, wall = _train_peak_rss(data, os.path.join(root, f"run-{label}"), a.steps)
        file_bytes = os.path.getsize(os.path.join(data, "train.bin"))
        print(f"token file {file_bytes / 2**30:.2f} GiB ({n_rows} rows): peak RSS "
              f"{peak / 2**20:.0f} MiB over {a.steps} steps ({wall:.0f} s)")  # fmt: skip
        rows.append({**context_columns("cpu"), "file_bytes": file_bytes, "rows": n_rows,
                     "steps": a.steps, "peak_rss_bytes": peak,
                     "int64_copy_bytes": 4 * file_bytes, "wall_s": round(wall, 1)})  # fmt: skip
    write_rows(RESULTS / "text_memory.csv", rows)


if __name__ == "__main__":
    main()
