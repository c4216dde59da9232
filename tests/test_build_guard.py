"""setup.py's guard against a C++ runtime that kills the process when a kernel's argument check
fails (the extension built by a compiler whose libstdc++ / libgcc_s is not the one the interpreter
loads): the post-build check passes on a good build and stops the build, naming the cause and the
fix, when the check process dies."""

from __future__ import annotations

import ast
import importlib.util
import signal
import types
from pathlib import Path

import pytest
import torch

from mdfast import _extension

ROOT = Path(__file__).resolve().parents[1]


def _setup_functions() -> dict:
    """setup.py's imports, constants and functions, without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    keep = [n for n in tree.body if not isinstance(n, ast.Expr)]  # drops the docstring, setup()
    namespace: dict = {"__file__": str(ROOT / "setup.py")}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "setup.py", "exec"), namespace)
    return namespace


def test_toolchain_report_names_compiler_runtime_and_torch_compiler():
    setup = _setup_functions()
    tc = setup["_toolchain"](torch)
    text = setup["_describe"](tc)
    assert tc["cxx"] in text and "torch was built with" in text
    assert tc["torch_compiler"] != "unknown"
    assert tc["cxx11_abi"] == bool(torch._C._GLIBCXX_USE_CXX11_ABI)


@pytest.mark.skipif(not _extension.has_ops, reason="compiled kernels not built")
def test_post_build_check_passes_on_this_build(capsys):
    setup = _setup_functions()
    setup["_check_exceptions_raise"](_extension._C.__file__, setup["_toolchain"](torch))
    assert "raises ValueError, as it should" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("script", "says"),
    [
        (f"import os; os.kill(os.getpid(), {int(signal.SIGSEGV)})", "died of SIGSEGV"),
        ("import sys; sys.exit(3)", "returned without the error"),
    ],
)
def test_post_build_check_stops_the_build_and_names_the_fix(script, says):
    setup = _setup_functions()
    setup["_EXCEPTION_CHECK"] = script
    with pytest.raises(SystemExit) as stop:
        setup["_check_exceptions_raise"]("/some/_C.so", setup["_toolchain"](torch))
    message = str(stop.value)
    assert says in message and "CXX=" in message and "libstdc++" in message


def test_post_build_check_that_hangs_is_stopped_and_the_build_goes_on(capsys):
    setup = _setup_functions()
    setup["_EXCEPTION_CHECK"] = "import time; time.sleep(60)"
    setup["_EXCEPTION_CHECK_TIMEOUT"] = 1
    setup["_check_exceptions_raise"]("/some/_C.so", setup["_toolchain"](torch))
    assert "did not finish within 1 s" in capsys.readouterr().out


def test_old_setuptools_stops_the_build_naming_the_version_needed():
    setup = _setup_functions()
    setup["_require_setuptools"]()  # this environment's setuptools is new enough
    setup["setuptools"] = types.SimpleNamespace(
        __version__="68.2.2", __file__="/env/site-packages/setuptools/__init__.py"
    )
    with pytest.raises(SystemExit) as stop:
        setup["_require_setuptools"]()
    message = str(stop.value)
    assert "setuptools >= 77" in message and "68.2.2" in message and "license" in message


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_reads_what_the_build_says(capsys):
    """`make gpu-check`'s summary names the compiler and the post-build check's outcome from
    setup.py's own messages (these, not copies of them)."""
    parse = _gpu_check_module().parse_build_log
    setup = _setup_functions()
    tc = setup["_toolchain"](torch)
    describe = setup["_describe"](tc)
    assert parse(f"mdfast: {describe}\n")["toolchain"] == describe
    setup["_EXCEPTION_CHECK"] = "import sys; sys.exit(0)"
    setup["_check_exceptions_raise"]("/some/_C.so", tc)
    assert parse(capsys.readouterr().out)["exception_check"].startswith("ok")
    setup["_EXCEPTION_CHECK"] = f"import os; os.kill(os.getpid(), {int(signal.SIGSEGV)})"
    with pytest.raises(SystemExit) as stop:
        setup["_check_exceptions_raise"]("/some/_C.so", tc)
    assert parse(str(stop.value))["exception_check"] == "FAILED: died of SIGSEGV"
    setup["_EXCEPTION_CHECK"], setup["_EXCEPTION_CHECK_TIMEOUT"] = "import time; time.sleep(9)", 1
    setup["_check_exceptions_raise"]("/some/_C.so", tc)
    assert parse(capsys.readouterr().out)["exception_check"].startswith("stopped")
    assert parse("")["exception_check"] == "not run"
