"""The benchmark machinery measures what it claims: percentiles order, peak memory sees a
transient allocation of known size, CSV rows accumulate with a merged header, plots render."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common


def test_measure_orders_percentiles():
    t = common.measure(lambda: sum(range(20_000)), warmup=1, repeat=9)
    assert t.repeat == 9
    assert 0 < t.p20 <= t.median <= t.p80


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_cpu_peak_memory_sees_transient_allocation():
    size = 256 * 2**20

    def transient():
        x = torch.ones(size // 4, dtype=torch.float32)  # touched, so resident
        return float(x[-1])

    peak = common.peak_memory_bytes(transient)
    assert 0.9 * size <= peak <= 1.3 * size, peak
    small = common.peak_memory_bytes(lambda: torch.ones(1000).sum())
    assert small < 0.05 * size


def test_write_rows_merges_header_and_plot(tmp_path):
    path = tmp_path / "x.csv"
    ctx = common.context_columns("cpu")
    common.write_rows(path, [{"op": "a", "provider": "p", "median_ms": 1.0, **ctx}])
    common.write_rows(path, [{"op": "a", "provider": "q", "median_ms": 2.0, "extra": 3, **ctx}])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["provider"] for r in rows] == ["p", "q"]
    assert rows[0]["extra"] == "" and rows[1]["extra"] == "3"
    png = common.plot(path, label_cols=["op"], title="t")
    assert png.exists() and png.stat().st_size > 1000
