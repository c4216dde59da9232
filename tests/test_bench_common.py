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


def test_floor_columns_take_the_larger_term():
    ceil = common.Ceilings(
        copy_bandwidth=4e12,
        matmul_flops=8e14,
        matmul_dtype="bfloat16",
        matmul_size=8192,
        theoretical_bandwidth=5e12,
    )
    t = common.Timing(median=2e-3, p20=1.9e-3, p80=2.1e-3, repeat=10)
    cols = common.floor_columns(t, ceil, nbytes=4e9, flops=4e11)  # 1 ms of bytes, 0.5 of flops
    assert cols["floor_bound"] == "bytes"
    assert cols["floor_ms"] == pytest.approx(1.0)
    assert cols["frac_of_floor"] == pytest.approx(0.5)
    assert cols["achieved_GBps"] == pytest.approx(2000.0)
    assert cols["copy_over_theoretical"] == pytest.approx(0.8)
    cols = common.floor_columns(t, ceil, nbytes=4e9, flops=1.6e12)  # 2 ms of flops
    assert cols["floor_bound"] == "flops" and cols["frac_of_floor"] == pytest.approx(1.0)
    assert common.floor_columns(t, None, nbytes=1.0)["floor_ms"] == ""


def test_cpu_ceilings_are_measured():
    ceil = common.ceilings("cpu")
    assert ceil.copy_bandwidth > 1e8 and ceil.matmul_flops > 1e8
    assert ceil.matmul_dtype == "float32" and ceil.theoretical_bandwidth is None
    assert common.ceilings("cpu") is ceil  # once per process


def test_dit_forward_flops_matches_a_flop_count():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from mdfast.models import DiT, DiTConfig

    config = DiTConfig(vocab_size=100, hidden_dim=64, cond_dim=16, n_blocks=2, n_heads=4,
                       dropout=0.0, model_length=32, attn_backend="sdpa")  # fmt: skip
    model = DiT(config).eval()
    x = torch.randint(0, 100, (2, 32))
    # the math attention backend runs as bmm, which the counter sees (the fused kernels it skips)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)
    counted = counter.get_total_flops()
    assert common.dit_forward_flops(config, 2, 32) == pytest.approx(counted, rel=0.02)
    head_only = common.dit_forward_flops(config, 2, 32) - common.dit_forward_flops(
        config, 2, 32, head_rows=0
    )
    assert head_only == 2 * 32 * 2 * 64 * 100


def test_result_row_roles_and_skipped_providers():
    t = common.Timing(median=1e-3, p20=1e-3, p80=1e-3, repeat=3)
    row = common.result_row("op", "N=1", "mdfast", "mdfast", t, "cpu", peak_bytes=2**20, N=1)
    assert row["median_ms"] == 1.0 and row["peak_mem_mb"] == 1.0 and row["N"] == 1
    assert row["device_type"] == "cpu" and row["run"]
    skipped = common.result_row("op", "N=1", "liger", "baseline", None, "cpu", note="no liger")
    assert "median_ms" not in skipped and skipped["note"] == "no liger"
    with pytest.raises(ValueError, match="role"):
        common.result_row("op", "N=1", "x", "fastest", t, "cpu")


def test_quick_runs_write_only_into_an_explicit_folder(monkeypatch):
    import argparse

    args = argparse.Namespace(no_write=False, quick=True)
    monkeypatch.delenv("MDFAST_BENCH_RESULTS", raising=False)
    assert not common.writes_results(args)
    monkeypatch.setenv("MDFAST_BENCH_RESULTS", "/tmp/somewhere")
    assert common.writes_results(args)
    assert not common.writes_results(argparse.Namespace(no_write=True, quick=False))
    assert common.writes_results(argparse.Namespace(no_write=False, quick=False))
