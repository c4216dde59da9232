"""setup.py's guard against a C++ runtime that kills the process when a kernel's argument check
fails (the extension built by a compiler whose libstdc++ / libgcc_s is not the one the interpreter
loads): the post-build check passes on a good build and stops the build, naming the cause and the
fix, when the check process dies."""

from __future__ import annotations

import ast
import signal
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
