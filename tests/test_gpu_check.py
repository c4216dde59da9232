"""``make gpu-check``'s pieces that need no GPU: the parsers of its logs, the summary and the
packing of a canned run folder, the import of a run's rows into bench/results, and the smoke
script that the sanitizer runs (here on the CPU kernels: every registered op must be called)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mdfast import _extension

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="tests.test_a" name="test_x[cpu]" time="0.1"/>
<testcase classname="tests.test_a" name="test_x[cuda]" time="0.1"/>
<testcase classname="tests.test_a" name="test_y[cuda]"><failure message="boom">tb</failure>
</testcase>
<testcase classname="tests.test_b" name="test_z"><error message="setup">trace</error></testcase>
<testcase classname="tests.test_b" name="test_s"><skipped message="no gpu"/></testcase>
</testsuite></testsuites>
"""

MEMCHECK = """========= COMPUTE-SANITIZER
========= Invalid __global__ read of size 4 bytes
cuda_ops_smoke on cuda:0: 12 ops called (...), 100 checks, 0 failed: OK
========= ERROR SUMMARY: 2 errors
"""
RACECHECK = """========= COMPUTE-SANITIZER
cuda_ops_smoke on cuda:0: 12 ops called (...), 100 checks, 0 failed: OK
========= RACECHECK SUMMARY: 3 hazards displayed (0 errors, 3 warnings)
"""


def test_parse_junit_counts_and_cuda_cases(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    c = gpu_check.parse_junit(path)
    assert (c["passed"], c["failed"], c["errors"], c["skipped"]) == (2, 1, 1, 1)
    assert c["cuda_passed"] == 1
    assert c["failures"] == ["tests.test_a::test_y[cuda]", "tests.test_b::test_z"]
    assert gpu_check.parse_junit(tmp_path / "missing.xml") is None


def test_cuda_cases_are_told_by_their_parameters():
    assert gpu_check.is_cuda_case("tests/t.py::test_x[cuda]")
    assert gpu_check.is_cuda_case("tests.t::test_y[cuda-float32]")
    assert gpu_check.is_cuda_case("tests.t::test_z[4-cuda:0-remdm]")
    assert not gpu_check.is_cuda_case("tests.t::test_parse_cuda_cases")
    assert not gpu_check.is_cuda_case("tests.t::test_x[cpu]")
    assert not gpu_check.is_cuda_case("tests.t::test_x[cudagraph]")


def test_junit_lists_gpu_skips_and_the_key_files(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_no_host_sync" name="test_a"/>'
        '<testcase classname="tests.test_no_host_sync" name="test_b">'
        '<skipped message="needs a GPU"/></testcase>'
        '<testcase classname="tests.test_no_host_sync" name="test_c"><error message="x"/>'
        "</testcase>"
        '<testcase classname="tests.test_other" name="test_d">'
        '<skipped message="scipy missing"/></testcase>'
        "</testsuite></testsuites>"
    )
    c = gpu_check.parse_junit(path)
    assert c["key_files"] == {"test_no_host_sync": [1, 1, 1]}
    assert c["gpu_skipped"] == ["tests.test_no_host_sync::test_b: needs a GPU"]


def test_build_uses_the_system_compilers_unless_told_otherwise(tmp_path, monkeypatch):
    (tmp_path / "gcc").touch()
    monkeypatch.setattr(
        gpu_check, "SYSTEM_COMPILERS", {"CC": str(tmp_path / "gcc"), "CXX": str(tmp_path / "g++")}
    )
    assert gpu_check.build_compilers({}) == {"CC": str(tmp_path / "gcc")}  # no g++ there
    assert gpu_check.build_compilers({"CXX": "clang++", "CC": ""}) == {
        "CC": str(tmp_path / "gcc"),
        "CXX": "clang++",
    }


def _pytest_with_time_limit(tmp_path, test_code, *options):
    (tmp_path / "test_slow.py").write_text(test_code)
    path = [str(ROOT / "tools"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "pytest_time_limit",
         *options, str(tmp_path / "test_slow.py")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip


def test_time_limit_stand_in_fails_the_slow_test_only(tmp_path):
    code = "import time\n\ndef test_fast():\n    pass\n\ndef test_slow():\n    time.sleep(60)\n"
    r = _pytest_with_time_limit(tmp_path, code, "--timeout", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "test_slow.py::test_slow exceeded the per-test time limit of 1 s" in r.stdout
    assert "1 failed, 1 passed" in r.stdout


def test_time_limit_stand_in_ends_a_test_that_ignores_the_alarm(tmp_path):
    code = (
        "import signal, time\n\ndef test_stuck():\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n    time.sleep(60)\n"
    )
    stacks = tmp_path / "stacks.log"
    r = _pytest_with_time_limit(
        tmp_path, code, "--timeout", "1", "--timeout-hard", "2", f"--timeout-stacks={stacks}"
    )
    assert r.returncode != 0
    assert "in test_stuck" in stacks.read_text()


def test_time_limit_stand_in_under_xdist_fails_one_test_per_hang(tmp_path):
    pytest.importorskip("xdist")
    code = (
        "import signal, time\n\ndef test_fast():\n    pass\n\ndef test_slow():\n"
        "    time.sleep(60)\n\ndef test_stuck():\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n    time.sleep(60)\n"
        "\ndef test_after():\n    pass\n"
    )
    r = _pytest_with_time_limit(
        tmp_path, code, "-n", "2", "--timeout", "2", "--timeout-hard", "5",
        f"--junitxml={tmp_path / 'junit.xml'}",
    )  # fmt: skip
    counts = gpu_check.parse_junit(tmp_path / "junit.xml")
    # the hung test's worker died: xdist reports it, the other tests ran on a fresh worker
    assert (counts["passed"], counts["failed"] + counts["errors"]) == (2, 2), r.stdout + r.stderr
    assert sorted(counts["failures"]) == ["test_slow::test_slow", "test_slow::test_stuck"]
    assert "exceeded the per-test time limit of 2 s" in r.stdout
    assert "crashed while running 'test_slow.py::test_stuck'" in r.stdout


def test_parse_pytest_log_serial_and_xdist(tmp_path):
    log = tmp_path / "pytest.log"
    log.write_text(
        "tests/test_a.py::test_x[cuda] PASSED                [ 10%]\n"
        "tests/test_a.py::test_y FAILED                      [ 20%]\n"
        "[gw3] [ 30%] PASSED tests/test_b.py::test_q[cuda]\n"
        "[gw1] [ 40%] SKIPPED tests/test_b.py::test_s\n"
        "[gw0] [ 50%] ERROR tests/test_b.py::test_e\n"
    )
    c = gpu_check.parse_pytest_log(log)
    assert (c["passed"], c["failed"], c["errors"], c["skipped"]) == (2, 1, 1, 1)
    assert c["cuda_passed"] == 2 and c["incomplete"]
    assert c["failures"] == ["tests/test_a.py::test_y", "tests/test_b.py::test_e"]


def test_parse_sanitizer_summaries():
    mem = gpu_check.parse_sanitizer(MEMCHECK)
    assert mem["errors"] == 2 and mem["smoke_ok"]
    race = gpu_check.parse_sanitizer(RACECHECK)
    assert race["errors"] == 0 and race["hazards"] == 3 and race["race_warnings"] == 3
    died = gpu_check.parse_sanitizer("========= ERROR SUMMARY: 0 errors\nTraceback ...\n")
    assert died["errors"] == 0 and not died["smoke_ok"]


def _row(bench, case, provider, role, ms, **extra):
    return {"bench": bench, "case": case, "provider": provider, "role": role,
            "median_ms": ms, **extra}  # fmt: skip


ROWS = [
    _row("masked_ce", "N=16384 bf16", "mdfast", "mdfast", "1.0", frac_of_floor="0.8",
         floor_bound="bytes", peak_mem_mb="100", copy_GBps="4110.0", theoretical_GBps="4917.2",
         copy_over_theoretical="0.836", matmul_TFLOPs="762.0", matmul_dtype="bfloat16"),
    _row("masked_ce", "N=16384 bf16", "mdfast_inplace", "mdfast", "1.25"),
    _row("masked_ce", "N=16384 bf16", "liger_ce", "baseline", "3.0", peak_mem_mb="50"),
    _row("masked_ce", "N=16384 bf16", "torch_ce", "baseline", "12.0"),
    _row("masked_ce", "N=16384 bf16", "liger_flce", "baseline", "", note="not importable"),
    _row("step", "B=16 q=0.5", "mdfast_events", "info", "0.01"),
    _row("step", "B=16 q=0.5", "mdfast_step", "mdfast", "2.0"),
]  # fmt: skip


def test_headlines_compare_fastest_mdfast_with_fastest_peer():
    lines = gpu_check.headlines(ROWS)
    assert lines[0] == (
        "masked_ce         N=16384 bf16: mdfast 1.000 ms vs liger_ce 3.000 ms = 3.00x, "
        "80% of floor (bytes), peak 100 vs 50 MiB"
    )
    assert lines[1] == "step              B=16 q=0.5: mdfast_step 2.000 ms (no peer ran)"


def _canned_run(out: Path) -> None:
    work = out / "files"
    (work / "bench").mkdir(parents=True)
    (work / "junit.xml").write_text(JUNIT)
    (work / "memcheck.log").write_text(MEMCHECK)
    (work / "racecheck.log").write_text(RACECHECK)
    image = {"runnable": True, "sass": "sm_90", "ptx": "compute_90", "error": None}
    device = {"name": "NVIDIA H200", "capability": "9.0", "sm_count": 132,
              "sm_clock_mhz": 1980.0, "memory_clock_mhz": 3201.0, "memory_bus_width_bits": 6144,
              "theoretical_bandwidth_gbps": 4917.2, "l2_cache_mb": 60.0, "total_memory_gib": 139.8,
              "source": "cuda.bindings", "kernel_image": image}  # fmt: skip
    info = {"version": "0.1.0", "torch": "2.11.0+cu130", "torch_cuda": "13.0",
            "backends": ["CPU", "CUDA"], "cuda_archs": ["sm_90"], "device": device,
            "compiled": {"compiler": "11.4.0"}}  # fmt: skip
    (work / "build_info.json").write_text(json.dumps(info))
    state = {
        "build": {"status": "ok", "seconds": 95.0, "detail": "MAX_JOBS=16",
                  "toolchain": "C++ compiler /usr/bin/g++ (11.4.0, libstdc++ /usr/lib/x)",
                  "exception_check": "FAILED: died of SIGSEGV"},
        "tests": {"status": "failed", "seconds": 120.0, "detail": "2 passed, 1 failed",
                  "counts": gpu_check.parse_junit(work / "junit.xml")},
        "memcheck": {"status": "failed", "seconds": 60.0, "detail": "2 errors; smoke OK"},
        "racecheck": {"status": "ok", "seconds": 70.0, "detail": "0 errors, 3 hazards"},
    }  # fmt: skip
    (work / "phases.json").write_text(json.dumps(state))
    with open(work / "bench" / "masked_ce.csv", "w", newline="") as f:
        fields = sorted({k for r in ROWS for k in r} | {"run"})
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({**r, "run": "gpucheck-canned"} for r in ROWS)


def _gpu_check(*args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_summary_of_a_canned_run_and_its_import(tmp_path):
    out = tmp_path / "out"
    _canned_run(out)
    r = _gpu_check("--phases", "summary", "--out-dir", str(out))
    assert r.returncode == 1, r.stdout + r.stderr  # a failed test and memcheck errors: FAIL
    summary = (out / "summary.txt").read_text()
    assert "NVIDIA H200, compute capability 9.0, 132 SMs" in summary
    assert "4917.2 GB/s theoretical" in summary and "this GPU runs sm_90" in summary
    assert "failing tests (2): tests.test_a::test_y[cuda], tests.test_b::test_z" in summary
    assert "memcheck           failed" in summary
    assert (
        "compiler: C++ compiler /usr/bin/g++ (11.4.0, libstdc++ /usr/lib/x); the extension "
        "records compiler 11.4.0; post-build exception check: FAILED: died of SIGSEGV"
    ) in summary
    assert (
        "skipped for want of a GPU or CUDA kernels (1):\n  tests.test_b::test_s: no gpu" in summary
    )
    assert "copy 4110.0 GB/s measured (theoretical 4917.2 GB/s, ratio 0.836)" in summary
    assert "mdfast 1.000 ms vs liger_ce 3.000 ms = 3.00x" in summary
    assert "not run: liger_flce: not importable" in summary
    assert summary.rstrip().endswith("verdict : FAIL")
    # what the device tool brings back: at most 8 files, the loose folder packed away
    top = sorted(p.name for p in out.iterdir())
    assert top == ["gpu-check.tar.gz", "masked_ce.csv", "summary.txt"]
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        names = set(tar.getnames())
    assert {
        "gpu-check/memcheck.log",
        "gpu-check/junit.xml",
        "gpu-check/bench/masked_ce.csv",
    } <= names

    results = tmp_path / "results"
    r = _gpu_check("import-results", str(out), env={"MDFAST_BENCH_RESULTS": str(results)})
    assert r.returncode == 0, r.stdout + r.stderr
    with open(results / "masked_ce.csv", newline="") as f:
        imported = list(csv.DictReader(f))
    assert [row["provider"] for row in imported] == [row["provider"] for row in ROWS]
    assert (results / "masked_ce.png").stat().st_size > 1000
    kept = results / "gpu-check" / "gpucheck-canned"
    assert (kept / "summary.txt").read_text() == summary
    assert (kept / "memcheck.log").exists()


@pytest.mark.slow
@pytest.mark.skipif("cpu" not in _extension.BACKENDS, reason="CPU kernels not built")
def test_smoke_script_calls_every_op_on_cpu():
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "cuda_ops_smoke.py"), "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.endswith(": OK") and " 0 failed" in last
    assert "ops never called" not in r.stdout


def test_every_gpu_benchmark_is_run():
    """A benchmark module (one with main()) added to bench/ is either run by gpu-check or named
    as one that measures the host."""
    with_main = {
        p.stem for p in (ROOT / "bench").glob("*.py") if "\ndef main(" in p.read_text()
    } - {"__main__"}
    run = {args[1].removeprefix("bench.") for args, _ in gpu_check.BENCHES.values()}
    assert with_main == run | set(gpu_check.HOST_BENCHES)
    assert not run & set(gpu_check.HOST_BENCHES)


def test_phases_that_do_not_fit_the_budget_are_skipped(tmp_path):
    out = tmp_path / "out"
    r = _gpu_check("--dry-run", "--phases", "tests,bench,summary", "--budget", "10",
                   "--out-dir", str(out))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (out / "summary.txt").read_text()
    for phase in ("tests", "bench:masked_ce", "bench:e2e"):
        assert f"{phase}" in summary
    assert summary.count("no time left in the budget") >= 1
    assert "left in the budget" in summary.split("bench:e2e", 1)[1].splitlines()[0]
