"""A per-test time limit for pytest on machines without pytest-timeout: ``make gpu-check`` loads
it (``-p pytest_time_limit``, with ``tools/`` on PYTHONPATH) only when pytest-timeout is missing,
so ``--timeout S`` means the same thing either way.

* ``--timeout S``: a test whose setup, call and teardown together run longer than S seconds fails
  with "exceeded the per-test time limit": SIGALRM raises ``pytest.fail`` in the test's thread.
* A test stuck where no Python code runs (inside a CUDA call, a blocking C function that retries
  after the signal) cannot be failed that way. After ``--timeout-hard`` seconds (default S + 60)
  :mod:`faulthandler` writes every thread's stack to ``--timeout-stacks FILE`` (appended; pytest
  captures stderr, so without a file the stacks may be lost) and ends the process: under
  pytest-xdist the worker's death fails that one test and a fresh worker goes on with the rest.

S = 0 turns both off.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("time limit (pytest-timeout stand-in)")
    group.addoption(
        "--timeout",
        type=float,
        default=0.0,
        help="fail a test that runs longer than this many seconds (0: no limit)",
    )
    group.addoption(
        "--timeout-hard",
        type=float,
        default=None,
        help="end the process, stacks dumped, when a test runs this long (default: timeout + 60)",
    )
    group.addoption(
        "--timeout-stacks",
        default=None,
        help="file the stacks of a test stopped by --timeout-hard are appended to",
    )


_stacks = {}


def pytest_configure(config):
    path = config.getoption("timeout_stacks")
    if path:
        _stacks["file"] = open(path, "a")


def pytest_unconfigure(config):
    stream = _stacks.pop("file", None)
    if stream is not None:
        stream.close()


def _limits(config) -> tuple[float, float]:
    soft = config.getoption("timeout") or 0.0
    hard = config.getoption("timeout_hard")
    return soft, (soft + 60.0 if hard is None else hard)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    soft, hard = _limits(item.config)
    if soft <= 0:
        yield
        return
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(
        signal, "setitimer"
    )
    previous = None
    if use_alarm:

        def expire(signum, frame):
            pytest.fail(f"{item.nodeid} exceeded the per-test time limit of {soft:g} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, soft)
    faulthandler.dump_traceback_later(hard, exit=True, file=_stacks.get("file", sys.stderr))
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
