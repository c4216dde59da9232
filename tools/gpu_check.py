"""``make gpu-check``: everything a session lent a GPU runs first, in one call of at most 8 minutes.

Phases (each with its own time limit, all inside one wall-clock budget):

  wheels     install ``wheels/*.whl`` (Liger-Kernel, pytest-timeout, ...) with
             ``pip --no-index --no-deps --target`` into a private folder on PYTHONPATH
  build      ``setup.py build_ext --inplace`` with MAX_JOBS = all cores, TORCH_CUDA_ARCH_LIST
             = the GPU's compute capability (CUDA kernels required) and the system compiler
             (CC=/usr/bin/gcc, CXX=/usr/bin/g++ unless CC / CXX are set): a g++ first on PATH
             may bring a C++ runtime under which torch's C++ errors kill the process
  info       ``mdfast.build_info()`` (backends, compiled archs, device attributes, theoretical
             bandwidth, the kernel image the GPU runs) and ``nvidia-smi``
  tests      the whole pytest suite with the GPU visible: pytest-xdist ``-n`` when installed,
             a per-test ``--timeout`` (pytest-timeout's, else tools/pytest_time_limit.py's),
             ``--junitxml``, the full ``-v`` log
  sanitizer  compute-sanitizer memcheck and racecheck over ``tools/cuda_ops_smoke.py`` (every op
             at small awkward shapes), concurrently with the tests
  bench      every benchmark on CUDA at its target shapes, the long end-to-end generation last
  summary    a short summary (tests, sanitizer errors, each benchmark case's ratio against its
             fastest peer and fraction of the hardware floor), printed and in summary.txt

Everything lands in ``--out-dir`` (default ``gpu-check/``): ``summary.txt``, the benchmark CSVs
and ``gpu-check.tar.gz`` holding every log, the JUnit XML, build_info.json, CSVs and plots (the
loose copies are removed unless ``--keep-files``, so the folder holds at most 8 files).

Without a GPU (or with ``--dry-run``) the same script runs every step that needs none: a CPU
build, the suite on CPU, the smoke script on CPU (no sanitizer), the benchmarks at ``--quick``
shapes on CPU; no time budget unless ``--budget`` is given.

    python tools/gpu_check.py [--out-dir DIR] [--dry-run] [--phases build,tests,...]
    python tools/gpu_check.py --phases summary --out-dir DIR     # re-summarise a kept folder
    python tools/gpu_check.py import-results DIR_OR_TARBALL      # rows into bench/results/
"""

from __future__ import annotations

import argparse
import csv
import datetime
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent.parent
PHASES = ["wheels", "build", "info", "tests", "sanitizer", "bench", "summary"]
# name -> (arguments after `python`, CSV it writes)
BENCHES = {
    "masked_ce": (["-m", "bench.masked_ce"], "masked_ce.csv"),
    "sampling": (["-m", "bench.sampling", "--only", "step", "sample_x0"], "sampling.csv"),
    "prime": (["-m", "bench.prime"], "prime.csv"),
    "train_step": (["-m", "bench.train_step"], "train_step.csv"),
    "integrations": (["-m", "bench.integrations"], "integrations.csv"),
    "e2e": (["-m", "bench.sampling", "--only", "e2e"], "sampling.csv"),
}
# benchmarks that measure the host, not the GPU: not run by gpu-check
HOST_BENCHES = {"text_memory": "peak resident memory of CPU training on a multi-GB token file"}
# seconds a benchmark needs on an H200 before it is started at all (the rest: whatever is left).
# The end-to-end generation at B=64, T=1000 makes ~1000 denoiser calls per sampler, and the
# seed-style sampler ~45 passes over a 13 GB posterior per step: about 4 minutes for the three.
MIN_SECONDS = {"e2e": 240}
# time caps per phase (seconds): on a GPU machine / in a dry run
CAPS = {
    "wheels": (60, 120),
    "build": (300, 1200),
    "info": (60, 120),
    "tests": (240, 2400),
    "sanitizer": (240, 600),
    "bench": (300, 900),
}
RESERVE_S = 15  # kept for the summary and the tarball
# the compilers of the distribution, whose C++ runtime is the one the interpreter and torch load
SYSTEM_COMPILERS = {"CC": "/usr/bin/gcc", "CXX": "/usr/bin/g++"}
# test files whose results the summary lists on their own
KEY_TEST_FILES = {
    "test_no_host_sync": "no host sync",
    "test_op_contract": "op contracts (bad input in a subprocess)",
}
TARBALL = "gpu-check.tar.gz"
SUMMARY = "summary.txt"


# the child leads its own process group (killed as one), in this session
_OWN_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}


class Job:
    """A child process whose whole output goes to one log file; killed (its process group, and
    nothing else) when its time is up or when gpu-check itself is stopped. The group stays in
    this session, so whatever stops the session stops it too."""

    running: ClassVar[set[Job]] = set()

    def __init__(self, name, cmd, log: Path, env, timeout):
        self.name, self.cmd, self.log, self.timeout = name, cmd, log, max(1.0, timeout)
        self.start = time.monotonic()
        self.file = open(log, "w")  # closed in wait()
        self.file.write(f"$ {shlex.join(cmd)}\n")
        self.file.flush()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            **_OWN_GROUP,
        )
        Job.running.add(self)
        self.end: float | None = None  # set when the process exits, by a watcher thread
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.proc.wait()
        self.end = time.monotonic()
        Job.running.discard(self)

    def kill(self) -> None:
        """SIGTERM to the job's process group, SIGKILL 10 s later if it is still there."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def wait(self) -> dict:
        timed_out = False
        try:
            rc = self.proc.wait(timeout=max(1.0, self.timeout - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
            rc = None
        seconds = round((self.end or time.monotonic()) - self.start, 1)
        if timed_out:
            self.file.write(
                f"\n[gpu-check] killed after {seconds} s (limit {self.timeout:.0f} s)\n"
            )
        self.file.close()
        return {"rc": rc, "timed_out": timed_out, "seconds": seconds, "log": self.log.name}


class Check:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out_dir).resolve()
        self.work = self.out / "files"
        phases = [p.strip() for p in args.phases.split(",") if p.strip()]
        if phases != ["summary"]:  # a new run: nothing of an earlier one may mix in
            shutil.rmtree(self.work, ignore_errors=True)
            for old in [self.out / SUMMARY, self.out / TARBALL, *self.out.glob("*.csv")]:
                old.unlink(missing_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.dry = args.dry_run
        budget = args.budget if args.budget is not None else (0 if self.dry else 480)
        self.deadline = self.started + budget if budget > 0 else None
        self.state_path = self.work / "phases.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.site = ROOT / "build" / "gpu-check-site"
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env["MDFAST_COMMIT"] = commit()
        self.env["MDFAST_BENCH_RESULTS"] = str(self.work / "bench")
        self.env.setdefault(
            "MDFAST_BENCH_RUN",
            "gpucheck-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S"),
        )
        if self.site.is_dir():
            self._add_site()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _add_site(self):
        old = self.env.get("PYTHONPATH", "")
        if str(self.site) not in old.split(os.pathsep):
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.site), old) if p)

    def timeout(self, phase: str) -> float:
        cap = CAPS[phase][1 if self.dry else 0]
        if self.deadline is None:
            return cap
        return min(cap, self.deadline - time.monotonic() - RESERVE_S)

    def record(self, phase: str, result: dict) -> None:
        self.state[phase] = result
        self.state_path.write_text(json.dumps(self.state, indent=1))
        status, seconds = result.get("status", ""), result.get("seconds", 0)
        detail = result.get("detail", "")
        print(f"[gpu-check] {phase:18s} {status:8s} {seconds:7.1f} s  {detail}", flush=True)

    def python(self, *args) -> list[str]:
        return [sys.executable, *args]

    def probe(self, code: str) -> str:
        """stdout of a short Python snippet in the check's environment ('' on failure or after
        two minutes)."""
        try:
            r = subprocess.run(
                self.python("-c", code),
                capture_output=True,
                text=True,
                env=self.env,
                cwd=ROOT,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            return ""
        return r.stdout.strip() if r.returncode == 0 else ""

    def has_module(self, name: str) -> bool:
        return (
            self.probe(f"import importlib.util as u; print(u.find_spec({name!r}) is not None)")
            == "True"
        )

    def out_of_time(self, phase: str) -> bool:
        if self.timeout(phase) >= 5:
            return False
        self.record(
            phase, {"status": "skipped", "seconds": 0, "detail": "no time left in the budget"}
        )
        return True

    # -- phases --------------------------------------------------------------------------------
    def wheels(self):
        wheels = sorted(glob.glob(str(ROOT / "wheels" / "*.whl")))
        if not wheels:
            self.record("wheels", {"status": "none", "seconds": 0, "detail": "no wheels/*.whl"})
            return
        shutil.rmtree(self.site, ignore_errors=True)
        cmd = self.python("-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
                          "--no-cache-dir", "--target", str(self.site), *wheels)  # fmt: skip
        r = Job("wheels", cmd, self.work / "wheels.log", self.env, self.timeout("wheels")).wait()
        self._add_site()
        names = ", ".join(Path(w).name.split("-")[0] for w in wheels)
        r.update(status="ok" if r["rc"] == 0 else "failed", detail=names)
        self.record("wheels", r)

    def build(self):
        env = dict(self.env)
        env["MAX_JOBS"] = env.get("MAX_JOBS") or str(os.cpu_count() or 1)
        compilers = build_compilers(env)
        env.update(compilers)
        if self.dry:
            env["MDFAST_BUILD_CUDA"] = "0"
        else:
            env["MDFAST_BUILD_CUDA"] = "1"
            if not env.get("TORCH_CUDA_ARCH_LIST"):
                cap = self.probe(
                    "import torch; print('%d.%d' % torch.cuda.get_device_capability())"
                )
                env["TORCH_CUDA_ARCH_LIST"] = cap or "9.0"
            if not env.get("CUDA_HOME") and Path("/usr/local/cuda/bin/nvcc").exists():
                env["CUDA_HOME"] = "/usr/local/cuda"
        cmd = self.python("setup.py", "build_ext", "--inplace")
        r = Job("build", cmd, self.work / "build.log", env, self.timeout("build")).wait()
        what = (
            "CPU only (dry run)"
            if self.dry
            else f"TORCH_CUDA_ARCH_LIST={env['TORCH_CUDA_ARCH_LIST']}"
        )
        chosen = " ".join(f"{k}={v}" for k, v in sorted(compilers.items())) or "compilers from PATH"
        r.update(parse_build_log((self.work / "build.log").read_text(errors="replace")))
        r.update(
            status="ok" if r["rc"] == 0 else "failed",
            detail=f"MAX_JOBS={env['MAX_JOBS']} {chosen} {what}",
        )
        self.record("build", r)

    def info(self):
        code = "import json, mdfast; print(json.dumps(mdfast.build_info(), default=str))"
        r = Job("info", self.python("-c", code), self.work / "build_info.log", self.env,
                self.timeout("info")).wait()  # fmt: skip
        text = (self.work / "build_info.log").read_text().splitlines()
        info = None
        for line in reversed(text):
            if line.startswith("{"):
                info = json.loads(line)
                break
        if info is not None:
            (self.work / "build_info.json").write_text(json.dumps(info, indent=1))
        if shutil.which("nvidia-smi"):
            try:
                smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60)
                smi_text = smi.stdout + smi.stderr
            except subprocess.TimeoutExpired:
                smi_text = "nvidia-smi did not answer within 60 s\n"
            (self.work / "nvidia-smi.txt").write_text(smi_text)
        ok = info is not None and (self.dry or "CUDA" in info.get("backends", []))
        detail = "" if info is None else f"backends {info.get('backends')}"
        if info is not None and not self.dry and "CUDA" not in info.get("backends", []):
            detail += " (no CUDA kernels: the GPU phases cannot test them)"
        r.update(status="ok" if ok else "failed", detail=detail)
        self.record("info", r)

    def tests_command(self) -> tuple[list[str], dict]:
        """The pytest command line and its environment."""
        env = dict(self.env)
        extra = shlex.split(self.args.pytest_args or "")
        named = any((ROOT / a.split("::")[0]).exists() for a in extra if not a.startswith("-"))
        paths = [] if named else ["tests"]  # test paths among them replace the whole suite
        cmd = self.python("-m", "pytest", *paths, "-v", "-rfEs", "-p", "no:cacheprovider",
                          f"--junitxml={self.work / 'junit.xml'}")  # fmt: skip
        if self.has_module("pytest_benchmark"):
            cmd.append("--benchmark-disable")
        if self.has_module("xdist"):
            workers = int(os.environ.get("PYTEST_WORKERS") or min(os.cpu_count() or 1, 8))
            if workers > 1:
                cmd += ["-n", str(workers)]
        limit = os.environ.get("PYTEST_TIMEOUT", "300")
        if not self.has_module("pytest_timeout"):  # the stand-in, with the same --timeout
            tools = str(ROOT / "tools")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (tools, env.get("PYTHONPATH")) if p)
            cmd += ["-p", "pytest_time_limit", f"--timeout-stacks={self.work / 'hung-tests.log'}"]
        cmd += ["--timeout", limit]
        return cmd + extra, env

    def smoke_jobs(self) -> list[tuple[str, list[str], dict]]:
        smoke = self.python(str(ROOT / "tools" / "cuda_ops_smoke.py"))
        if self.dry:
            return [("smoke", [*smoke, "--device", "cpu"], self.env)]
        sanitizer = find_sanitizer()
        if sanitizer is None:
            return [("smoke", [*smoke, "--device", "cuda"], self.env)]
        memcheck_env = dict(self.env, PYTORCH_NO_CUDA_MEMORY_CACHING="1")  # every buffer exact
        return [
            (
                "memcheck",
                [sanitizer, "--tool", "memcheck", "--error-exitcode", "99", *smoke],
                memcheck_env,
            ),
            (
                "racecheck",
                [sanitizer, "--tool", "racecheck", "--error-exitcode", "99", *smoke],
                self.env,
            ),
        ]

    def tests_and_sanitizer(self, phases):
        jobs = []
        if "tests" in phases and not self.out_of_time("tests"):
            cmd, env = self.tests_command()
            jobs.append(("tests", Job("tests", cmd, self.work / "pytest.log", env,
                                      self.timeout("tests"))))  # fmt: skip
        if "sanitizer" in phases and not self.out_of_time("sanitizer"):
            for name, cmd, env in self.smoke_jobs():
                if self.args.serial:  # one after the other instead of beside the tests
                    for phase, job in jobs:
                        self._finish(phase, job)
                    jobs = []
                jobs.append(
                    (
                        name,
                        Job(name, cmd, self.work / f"{name}.log", env, self.timeout("sanitizer")),
                    )
                )
            if not self.dry and find_sanitizer() is None:
                print("[gpu-check] compute-sanitizer not found: the smoke script runs without it")
        for phase, job in jobs:
            self._finish(phase, job)

    def _finish(self, phase, job):
        r = job.wait()
        if phase == "tests":
            counts = parse_junit(self.work / "junit.xml") or parse_pytest_log(
                self.work / "pytest.log"
            )
            r["counts"] = counts
            bad = counts.get("failed", 0) + counts.get("errors", 0)
            r["status"] = (
                "ok" if r["rc"] == 0 and not bad else ("timeout" if r["timed_out"] else "failed")
            )
            r["detail"] = format_counts(counts)
        else:
            san = parse_sanitizer((self.work / job.log.name).read_text(errors="replace"))
            r["sanitizer"] = san
            clean = r["rc"] == 0 and san["smoke_ok"] and not san.get("errors")
            r["status"] = "ok" if clean else ("timeout" if r["timed_out"] else "failed")
            r["detail"] = format_sanitizer(phase, san)
        self.record(phase, r)
        if r["status"] != "ok":
            tail = (self.work / job.log.name).read_text(errors="replace").splitlines()[-15:]
            print("\n".join(f"    | {line}" for line in tail), flush=True)

    def bench(self):
        names = self.args.bench.split(",") if self.args.bench else list(BENCHES)
        device = "cpu" if self.dry else "cuda"
        (self.work / "bench").mkdir(exist_ok=True)
        for name in names:
            if name not in BENCHES:
                raise SystemExit(
                    f"gpu-check: unknown benchmark {name!r}; known: {', '.join(BENCHES)}"
                )
            phase = f"bench:{name}"
            need = 5 if self.dry else MIN_SECONDS.get(name, 5)
            left = self.timeout("bench")
            if left < need:
                why = f"needs ~{need} s, {max(0, left):.0f} s left in the budget"
                if name == "e2e":
                    why += "; run it alone: PHASES=info,bench,summary BENCH=e2e"
                self.record(phase, {"status": "skipped", "seconds": 0, "detail": why})
                continue
            args, _ = BENCHES[name]
            cmd = self.python(*args, "--device", device, *(["--quick"] if self.dry else []))
            r = Job(
                phase, cmd, self.work / f"bench_{name}.log", self.env, self.timeout("bench")
            ).wait()
            r.update(status="ok" if r["rc"] == 0 else ("timeout" if r["timed_out"] else "failed"))
            self.record(phase, r)

    def summary(self) -> int:
        text, ok = render_summary(self.work, self.state, dry=self.dry)
        (self.out / SUMMARY).write_text(text)
        shutil.copy(self.out / SUMMARY, self.work / SUMMARY)
        for csv_path in sorted((self.work / "bench").glob("*.csv")):
            shutil.copy(csv_path, self.out / csv_path.name)
        with tarfile.open(self.out / TARBALL, "w:gz") as tar:
            tar.add(self.work, arcname="gpu-check")
        if not self.args.keep_files:
            shutil.rmtree(self.work)
        print(text, flush=True)
        return 0 if ok else 1


def commit() -> str:
    if os.environ.get("MDFAST_COMMIT"):
        return os.environ["MDFAST_COMMIT"]
    try:
        r = subprocess.run(["git", "describe", "--always", "--dirty=+dirty", "--abbrev=7"],
                           capture_output=True, text=True, cwd=ROOT, timeout=10)  # fmt: skip
        return r.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_compilers(environ) -> dict[str, str]:
    """CC and CXX for the build: the caller's when set, else the system's gcc / g++ when they
    exist (torch hands CC to nvcc as its host compiler too)."""
    chosen = {}
    for var, path in SYSTEM_COMPILERS.items():
        if environ.get(var):
            chosen[var] = environ[var]
        elif Path(path).exists():
            chosen[var] = path
    return chosen


def parse_build_log(text: str) -> dict:
    """What setup.py said about the toolchain (the compiler, its libstdc++, torch's compiler) and
    how its post-build check (a failed argument check must raise, not crash) ended."""
    out: dict = {"toolchain": None, "exception_check": "not run"}
    for line in text.splitlines():
        if line.startswith("mdfast: C++ compiler "):
            out["toolchain"] = line.removeprefix("mdfast: ")
        elif line.startswith("mdfast: post-build check:"):
            out["exception_check"] = "ok (a failed argument check raises ValueError)"
        elif "post-build exception check did not finish" in line:
            out["exception_check"] = "stopped: the check process did not finish"
        elif "could not run the post-build exception check" in line:
            out["exception_check"] = "could not run"
        elif "the built extension" in line and "instead of raising" in line:
            m = re.search(r"(died of \w+|returned without the error)", line)
            out["exception_check"] = "FAILED: " + (m.group(1) if m else "no ValueError")
    return out


def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and Path(home, "bin", "compute-sanitizer").exists():
            return str(Path(home, "bin", "compute-sanitizer"))
    return None


# --- parsing ------------------------------------------------------------------------------------


_CUDA_PARAM = re.compile(r"\[(?:[^\]]*[-_])?cuda(?::\d+)?(?:[-_][^\]]*)?\]")


def is_cuda_case(test_id: str) -> bool:
    """A test case parametrized on a CUDA device: ``test_x[cuda]``, ``test_y[cuda-fp32]``,
    ``test_z[4-cuda:0]`` (not a test that merely has 'cuda' in its name)."""
    return bool(_CUDA_PARAM.search(test_id))


def parse_junit(path: Path) -> dict | None:
    """Counts of a pytest JUnit XML: passed / failed / errors / skipped, the passed cases
    parametrized on CUDA, and the failing test ids."""
    if not Path(path).exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "cuda_passed": 0, "failures": []}
    counts["gpu_skipped"] = []  # skipped for want of a GPU / CUDA kernels: "id: reason"
    counts["key_files"] = {}  # KEY_TEST_FILES: [passed, failed, skipped]
    for case in root.iter("testcase"):
        classname = case.get("classname", "")
        name = f"{classname}::{case.get('name', '')}"
        kinds = {child.tag: child for child in case}
        if "failure" in kinds:
            outcome = "failed"
            counts["failures"].append(name)
        elif "error" in kinds:
            outcome = "errors"
            counts["failures"].append(name)
        elif "skipped" in kinds:
            outcome = "skipped"
            reason = kinds["skipped"].get("message", "")
            if re.search(r"gpu|cuda", reason, re.IGNORECASE):
                counts["gpu_skipped"].append(f"{name}: {reason}")
        else:
            outcome = "passed"
            counts["cuda_passed"] += is_cuda_case(name)
        counts[outcome] += 1
        key = classname.rsplit(".", 1)[-1]
        if key in KEY_TEST_FILES:
            tally = counts["key_files"].setdefault(key, [0, 0, 0])  # errors count as failed
            tally[{"passed": 0, "failed": 1, "errors": 1, "skipped": 2}[outcome]] += 1
    return counts


_RESULT_WORDS = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped"}


def parse_pytest_log(path: Path) -> dict:
    """Counts from a ``pytest -v`` log (when no JUnit XML was written: the run was killed)."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "cuda_passed": 0, "failures": []}
    counts["incomplete"] = True
    if not Path(path).exists():
        return counts
    words = "PASSED|FAILED|ERROR|SKIPPED"
    # `-v` serial: "tests/x.py::test PASSED"; xdist: "[gw0] [ 12%] PASSED tests/x.py::test"
    pattern = re.compile(rf"^(?:\[gw\d+\] \[\s*\d+%\] )?({words}) (\S+)|^(\S+::\S+) ({words})")
    for line in Path(path).read_text(errors="replace").splitlines():
        m = pattern.match(line)
        if not m:
            continue
        word, test = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        key = _RESULT_WORDS[word]
        counts[key] += 1
        if key in ("failed", "errors"):
            counts["failures"].append(test)
        elif key == "passed":
            counts["cuda_passed"] += is_cuda_case(test)
    return counts


def format_counts(c: dict) -> str:
    text = (
        f"{c['passed']} passed, {c['failed']} failed, {c['errors']} errors, {c['skipped']} skipped"
    )
    text += f" ({c['cuda_passed']} CUDA-parametrized cases passed)"
    return text + (" [incomplete: no JUnit XML]" if c.get("incomplete") else "")


def parse_sanitizer(text: str) -> dict:
    """compute-sanitizer's summary lines and the smoke script's verdict from one log."""
    out: dict = {"smoke_ok": False, "smoke_line": ""}
    m = re.search(r"ERROR SUMMARY: (\d+) error", text)
    if m:
        out["errors"] = int(m.group(1))
    m = re.search(
        r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)", text
    )
    if m:
        out["hazards"], out["race_errors"], out["race_warnings"] = map(int, m.groups())
        out["errors"] = max(out.get("errors", 0), out["race_errors"])
    for line in text.splitlines():
        if line.startswith("cuda_ops_smoke on "):
            out["smoke_line"] = line
            out["smoke_ok"] = line.rstrip().endswith(": OK")
    return out


def format_sanitizer(name: str, s: dict) -> str:
    smoke = "smoke OK" if s["smoke_ok"] else "smoke FAILED or did not finish"
    if name == "smoke":
        return smoke + " (no compute-sanitizer)"
    if "errors" not in s:
        return f"no sanitizer summary in the log; {smoke}"
    text = f"{s['errors']} errors"
    if "hazards" in s:
        text += f", {s['hazards']} hazards ({s['race_warnings']} warnings)"
    return f"{text}; {smoke}"


def read_rows(bench_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(bench_dir).glob("*.csv")):
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def _ms(row) -> float | None:
    try:
        return float(row.get("median_ms") or "")
    except ValueError:
        return None


def headlines(rows: list[dict]) -> list[str]:
    """One line per benchmark case: the fastest mdfast provider, the fastest peer, the ratio
    (peer median / mdfast median: > 1 means mdfast is faster) and mdfast's fraction of the
    floor."""
    cases: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("case") and r.get("role") in ("mdfast", "baseline"):
            cases.setdefault((r.get("bench", ""), r["case"]), []).append(r)
    lines = []
    for (bench, case), group in cases.items():
        timed = [r for r in group if _ms(r) is not None]
        ours = min((r for r in timed if r["role"] == "mdfast"), key=_ms, default=None)
        peer = min((r for r in timed if r["role"] == "baseline"), key=_ms, default=None)
        if ours is None:
            lines.append(f"{bench:17s} {case}: no mdfast timing")
            continue
        text = f"{bench:17s} {case}: {ours['provider']} {_ms(ours):.3f} ms"
        if peer is not None:
            text += f" vs {peer['provider']} {_ms(peer):.3f} ms = {_ms(peer) / _ms(ours):.2f}x"
        else:
            text += " (no peer ran)"
        if ours.get("frac_of_floor"):
            text += (
                f", {100 * float(ours['frac_of_floor']):.0f}% of floor ({ours.get('floor_bound')})"
            )
        if ours.get("peak_mem_mb") and peer is not None and peer.get("peak_mem_mb"):
            text += (
                f", peak {float(ours['peak_mem_mb']):.0f} vs {float(peer['peak_mem_mb']):.0f} MiB"
            )
        lines.append(text)
    return lines


def render_summary(work: Path, state: dict, dry: bool = False) -> tuple[str, bool]:
    """The summary text and whether every phase that ran passed."""
    info = {}
    if (work / "build_info.json").exists():
        info = json.loads((work / "build_info.json").read_text())
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [f"mdfast gpu-check {now}  commit {commit()}" + ("  (DRY RUN: no GPU)" if dry else "")]
    dev = info.get("device")
    if dev:
        bw = dev.get("theoretical_bandwidth_gbps")
        lines.append(
            f"device  : {dev.get('name')}, compute capability {dev.get('capability')}, "
            f"{dev.get('sm_count')} SMs, SM clock {dev.get('sm_clock_mhz')} MHz, memory "
            f"{dev.get('memory_clock_mhz')} MHz x {dev.get('memory_bus_width_bits')} bit = "
            f"{bw} GB/s theoretical, L2 {dev.get('l2_cache_mb')} MiB, "
            f"{dev.get('total_memory_gib')} GiB (from {dev.get('source')})"
        )
        image = dev.get("kernel_image") or {}
        lines.append(
            f"kernels : compiled {info.get('cuda_archs')}; this GPU runs "
            f"{image.get('sass') or 'nothing'} ({image.get('error') or 'ok'})"
        )
    elif info:
        lines.append(f"device  : no GPU visible; backends {info.get('backends')}")
    if info:
        torch_line = f"{info.get('torch')} (CUDA {info.get('torch_cuda')})"
        lines.append(f"torch   : {torch_line}, mdfast {info.get('version')}")
    built = state.get("build", {})
    compiled = info.get("compiled") or {}
    if built.get("toolchain") or compiled.get("compiler"):
        lines.append(
            f"compiler: {built.get('toolchain') or 'build log not read'}; the extension records "
            f"compiler {compiled.get('compiler') or '?'}; post-build exception check: "
            f"{built.get('exception_check', 'not run')}"
        )
    ok = True
    lines.append("phases  :")
    for phase, r in state.items():
        if r.get("status") not in ("ok", "none", "skipped"):
            ok = False
        status, seconds, detail = r.get("status", "?"), r.get("seconds", 0), r.get("detail", "")
        lines.append(f"  {phase:18s} {status:8s} {seconds:6.0f} s  {detail}")
    tests = state.get("tests", {}).get("counts")
    if tests and tests.get("failures"):
        shown = tests["failures"][:15]
        lines.append(f"failing tests ({len(tests['failures'])}): " + ", ".join(shown))
    for key, (passed, failed, skipped) in sorted((tests or {}).get("key_files", {}).items()):
        lines.append(
            f"{KEY_TEST_FILES[key]} (tests/{key}.py): {passed} passed, {failed} failed, "
            f"{skipped} skipped"
        )
    gpu_skips = (tests or {}).get("gpu_skipped") or []
    if gpu_skips:
        lines.append(f"skipped for want of a GPU or CUDA kernels ({len(gpu_skips)}):")
        lines += [f"  {s}" for s in gpu_skips[:10]]
    rows = read_rows(work / "bench")
    ceil = next((r for r in rows if r.get("copy_GBps")), None)
    if ceil:
        lines.append(
            f"ceilings: copy {ceil['copy_GBps']} GB/s measured (theoretical "
            f"{ceil.get('theoretical_GBps') or '?'} GB/s, "
            f"ratio {ceil.get('copy_over_theoretical') or '?'}), "
            f"{ceil.get('matmul_dtype')} matmul {ceil.get('matmul_TFLOPs')} TFLOP/s"
        )
    heads = headlines(rows)
    if heads:
        lines.append("benchmarks (fastest mdfast vs fastest peer, same process):")
        lines += [f"  {h}" for h in heads]
    skipped = sorted(
        {(r["provider"], r.get("note", "")) for r in rows if _ms(r) is None and r.get("note")}
    )
    for provider, note in skipped:
        lines.append(f"  not run: {provider}: {note}")
    lines.append(
        f"files   : {SUMMARY}, {TARBALL} (all logs, junit.xml, build_info.json, CSVs, plots), *.csv"
    )
    lines.append("verdict : " + ("PASS" if ok else "FAIL"))
    return "\n".join(lines) + "\n", ok


# --- import into bench/results ------------------------------------------------------------------


def import_results(source: str) -> None:
    """Append a gpu-check run's benchmark rows to bench/results/*.csv, redraw the plots, and keep
    its summary, build info, JUnit XML and sanitizer logs in bench/results/gpu-check/<run>/."""
    sys.path.insert(0, str(ROOT))
    from bench import common

    src = Path(source)
    tmp = None
    if src.is_file() or (src / TARBALL).exists():
        tarball = src if src.is_file() else src / TARBALL
        tmp = ROOT / "build" / "gpu-check-import"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            try:
                tar.extractall(tmp, filter="data")
            except TypeError:  # Python without extraction filters
                tar.extractall(tmp)  # our own tarball
        src = tmp / "gpu-check"
    elif (src / "files").is_dir():
        src = src / "files"
    rows_by_csv = {
        p.name: list(csv.DictReader(open(p, newline="")))
        for p in sorted((src / "bench").glob("*.csv"))
    }
    run = next(
        (r.get("run") for rows in rows_by_csv.values() for r in rows if r.get("run")), "unknown"
    )
    for name, rows in rows_by_csv.items():
        common.write_rows(common.RESULTS / name, rows)
        print(f"appended {len(rows)} rows to {common.RESULTS / name}")
    import importlib

    for module in ("masked_ce", "sampling", "prime", "train_step"):
        csv_name = f"{module}.csv"
        if csv_name in rows_by_csv:
            mod = importlib.import_module(f"bench.{module}")
            plot_fn = getattr(mod, "plot_results", None)
            if plot_fn is not None:
                print(f"plot: {plot_fn(common.RESULTS / csv_name)}")
    keep = common.RESULTS / "gpu-check" / run
    keep.mkdir(parents=True, exist_ok=True)
    for name in (
        SUMMARY,
        "build_info.json",
        "junit.xml",
        "memcheck.log",
        "racecheck.log",
        "phases.json",
    ):
        if (src / name).exists() and (src / name).stat().st_size < 5 * 2**20:
            shutil.copy(src / name, keep / name)
    print(f"kept the run's records in {keep}")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def _stop(signum, frame):
    """Stopped from outside (a time limit, Ctrl-C): end the running jobs' process groups too."""
    for job in list(Job.running):
        job.kill()
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if argv[:1] == ["import-results"]:
        if len(argv) != 2:
            raise SystemExit("usage: gpu_check.py import-results DIR_OR_TARBALL")
        import_results(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=os.environ.get("OUT_DIR") or "gpu-check")
    env = os.environ.get
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=env("DRY_RUN", "") not in ("", "0"),
        help="CPU only: every step that needs no GPU (automatic without a GPU)",
    )
    parser.add_argument(
        "--phases", default=env("PHASES") or ",".join(PHASES), help=f"subset of {PHASES}"
    )
    parser.add_argument(
        "--bench", default=env("BENCH"), help=f"subset of {list(BENCHES)} (default: all)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=float(env("BUDGET_S")) if env("BUDGET_S") else None,
        help="wall-clock seconds for everything (default 480; none in a dry run)",
    )
    parser.add_argument(
        "--pytest-args",
        default=os.environ.get("PYTEST_ARGS"),
        help="extra pytest arguments; test paths among them replace the whole suite",
    )
    parser.add_argument(
        "--serial", action="store_true", help="sanitizer after the tests, not beside them"
    )
    parser.add_argument(
        "--keep-files", action="store_true", help="keep the loose files beside the tarball"
    )
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"unknown phases {unknown}; known: {PHASES}")
    if not args.dry_run and phases != ["summary"] and not gpu_visible():
        print("[gpu-check] no GPU visible: dry run (every step that needs no GPU)", flush=True)
        args.dry_run = True
    check = Check(args)
    budget = "none" if check.deadline is None else f"{check.deadline - check.started:.0f} s"
    print(
        f"[gpu-check] out dir {check.out}; phases {','.join(phases)}; budget {budget}", flush=True
    )
    if "wheels" in phases:
        check.wheels()
    if "build" in phases and not check.out_of_time("build"):
        check.build()
    if "info" in phases and not check.out_of_time("info"):
        check.info()
    check.tests_and_sanitizer(phases)
    if "bench" in phases:
        check.bench()
    if "summary" in phases:
        return check.summary()
    return 0


def gpu_visible() -> bool:
    try:
        r = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    except subprocess.TimeoutExpired:
        print("[gpu-check] asking torch for a GPU took over 120 s: taken as none", flush=True)
        return False
    return r.stdout.strip() == "True"


if __name__ == "__main__":
    sys.exit(main())
