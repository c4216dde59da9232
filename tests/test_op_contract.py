"""Every bad input of every op raises the documented error on every path, in its own process.

For each case of ``op_contract_cases.CASES`` (one changed argument of one op) and each path —
the compiled kernel behind the wrapper, the pure-PyTorch reference behind the wrapper, the raw
``torch.ops.mdfast`` call — the exception type and the named argument must be the ones the
contract promises, so the kernel and the reference cannot drift apart and the C++ checks cannot
drift from the Python ones. Each run happens in a child forked from a server that has already
imported torch and mdfast (fast), so a crash (a segfault in an exception path, say) fails that
one test with its signal instead of killing the test worker. On a GPU, every case also runs on
CUDA tensors (value checks with ``mdfast.set_validation("full")``), and each value case must run
without raising or faulting with validation off.
"""

from __future__ import annotations

import multiprocessing
import re
import signal

import op_contract_cases
import pytest
import torch
from op_contract_cases import CASES

from mdfast import _extension

CUDA = torch.cuda.is_available() and "cuda" in _extension.BACKENDS
_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        method = (
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        _CTX = multiprocessing.get_context(method)
        if method == "forkserver":
            _CTX.set_forkserver_preload(["op_contract_cases", "mdfast"])
    return _CTX


def run_isolated(fn_name: str, *args, timeout: float = 300.0):
    """``op_contract_cases.<fn_name>(*args)`` in a child process: its result, or a test failure
    naming how the child died."""
    ctx = _context()
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=op_contract_cases.child_main, args=(send, fn_name, *args))
    child.start()
    send.close()
    try:
        result = receive.recv() if receive.poll(timeout) else None
    except EOFError:  # the child died before sending
        result = None
    child.join(timeout)
    what = f"{fn_name}{args}"
    if child.is_alive():
        child.kill()
        pytest.fail(f"{what}: no result within {timeout} s")
    if result is None:
        code = child.exitcode
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
        pytest.fail(f"{what}: the process died ({how})")
    return result


def _params():
    for case_id, case in CASES.items():
        devices = (["cpu"] if not case.cuda_only else []) + (["cuda"] if CUDA else [])
        for device in devices:
            paths = ["kernel", "reference"]
            if case.raw and (device == "cpu" or not case.values):
                paths.append("raw")
            if device == "cuda" and case.values:
                paths.append("unchecked")
            for path in paths:
                marks = []
                if path in ("kernel", "raw", "unchecked") and not _extension.BACKENDS:
                    marks.append(pytest.mark.skip(reason="compiled kernels not built"))
                yield pytest.param(
                    case_id, path, device, id=f"{case_id}-{path}-{device}", marks=marks
                )
    if not CUDA:
        yield pytest.param(
            "", "", "cuda", id="cuda", marks=pytest.mark.skip(reason="needs a GPU and CUDA kernels")
        )


@pytest.mark.parametrize(("case_id", "path", "device"), list(_params()))
def test_bad_input_raises_the_contract_error(case_id, path, device):
    case = CASES[case_id]
    error, message = run_isolated("run_case", case_id, path, device)
    if path == "unchecked":
        assert error == "", f"validation off must not raise, got {error}: {message}"
        return
    assert error == case.error.__name__, f"expected {case.error.__name__}, got {error}: {message}"
    assert f"'{case.arg}'" in message, message
    assert re.search(case.match, message), (case.match, message)


def test_isolation_reports_a_crash():
    """The harness itself: a child killed by a signal fails its test, naming the signal."""
    with pytest.raises(pytest.fail.Exception, match="died \\(signal SIGSEGV\\)"):
        run_isolated("segfault")
