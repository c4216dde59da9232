"""Build mdfast's C++ (always) and CUDA (when possible) kernels into ``mdfast._C``.

Install with ``pip install --no-build-isolation -e .``: an isolated build environment would
resolve a second multi-GB torch. Environment:

* ``MDFAST_BUILD_CUDA=0|1`` forces the CUDA kernels off / on (default: on when the installed torch
  is a CUDA build and nvcc is found; no visible GPU is needed to compile).
* ``TORCH_CUDA_ARCH_LIST`` picks the GPU architectures (default ``8.0;9.0+PTX``: machine code for
  Ampere and Hopper, and PTX of 9.0 that the driver compiles for newer GPUs). The list is recorded
  in ``mdfast.build_info()``; an op called on a GPU that no compiled arch covers raises a
  RuntimeError naming the list and the GPU's compute capability.
* ``MDFAST_DEBUG=1`` builds with ``-O0 -g``; ``MAX_JOBS`` caps ninja's parallelism.
* ``CXX`` picks the C++ compiler. After the build, a child process loads the extension and makes
  one argument check fail: the error must come back as a Python exception. A C++ runtime other
  than the one the interpreter loads (a compiler that is not the system's, first on PATH) can
  instead kill the process while the error unwinds; the build then stops and says so
  (``MDFAST_SKIP_BUILD_CHECK=1`` skips this check; a check process that has not finished after
  90 s is stopped and the build goes on with a warning).
"""

import glob
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import setuptools

# pyproject.toml's SPDX ``license = "Apache-2.0"`` string is understood from setuptools 77 on;
# older ones stop with a cryptic `project.license` validation error. With
# `pip install --no-build-isolation` the environment's own setuptools builds, so say so up front.
SETUPTOOLS_MIN = (77, 0)


def _require_setuptools() -> None:
    found = tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])
    if found < SETUPTOOLS_MIN:
        raise SystemExit(
            f"mdfast: building needs setuptools >= {'.'.join(map(str, SETUPTOOLS_MIN))} (for the "
            f"SPDX license string in pyproject.toml), but this environment has setuptools "
            f"{setuptools.__version__} ({Path(setuptools.__file__).parent}). Upgrade it with "
            "`python -m pip install 'setuptools>=77'` and build again (`--no-build-isolation` "
            "builds with the environment's setuptools)."
        )


_require_setuptools()

from setuptools import find_packages, setup  # noqa: E402

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _cuda_wanted(torch, cuda_home):
    flag = os.environ.get("MDFAST_BUILD_CUDA", "").strip()
    if flag not in ("", "0", "1"):
        raise SystemExit(f"MDFAST_BUILD_CUDA must be 0 or 1, got {flag!r}")
    nvcc = cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists()
    possible = torch.version.cuda is not None and bool(nvcc)
    if flag == "1" and not possible:
        why = "torch is a CPU-only build" if torch.version.cuda is None else "nvcc was not found"
        raise SystemExit(
            f"MDFAST_BUILD_CUDA=1 but CUDA kernels cannot be built: {why} "
            "(set CUDA_HOME to the toolkit root)"
        )
    return possible if flag == "" else flag == "1"


def _nvidia_wheel_includes(torch):
    """Headers of the pip-installed CUDA libraries (cuBLAS, cuSPARSE...) that ATen's CUDA headers
    include; the system toolkit may not carry them."""
    site = Path(torch.__file__).resolve().parent.parent
    return sorted(str(p) for p in site.glob("nvidia/*/include") if p.is_dir())


def _extensions():
    # torch derives CUDA_HOME from `which nvcc` when unset; a wrapper script on PATH (as on our CI
    # machines) would point it at the wrong root, so prefer the conventional toolkit location.
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
        if Path("/usr/local/cuda/bin/nvcc").exists():
            os.environ["CUDA_HOME"] = "/usr/local/cuda"
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    with_cuda = _cuda_wanted(torch, CUDA_HOME)
    debug = os.environ.get("MDFAST_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]

    sources = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc").glob("*.cpp"))]
    sources += sorted(glob.glob("csrc/cpu/*.cpp", root_dir=ROOT))
    define_macros = [("MDFAST_TORCH_VERSION", f'"{torch.__version__}"')]
    cxx_flags = [*opt, "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]
    extra_compile_args = {"cxx": cxx_flags}
    include_dirs = [str(ROOT / "csrc" / "include")]

    if with_cuda:
        arch_list = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
        sources += sorted(glob.glob("csrc/cuda/*.cu", root_dir=ROOT))
        define_macros += [
            ("MDFAST_WITH_CUDA", None),
            ("MDFAST_CUDA_VERSION", f'"{torch.version.cuda}"'),
            ("MDFAST_CUDA_ARCH_LIST", f'"{arch_list}"'),
        ]
        include_dirs += _nvidia_wheel_includes(torch)
        extra_compile_args["nvcc"] = [*opt, "--expt-relaxed-constexpr", "-lineinfo"]
        ext = CUDAExtension
    else:
        ext = CppExtension
    what = "CPU kernels"
    if with_cuda:
        what += f" and CUDA kernels (nvcc in {CUDA_HOME}, TORCH_CUDA_ARCH_LIST={arch_list})"
    print(f"mdfast: building {what}: {' '.join(sources)}")
    return [
        ext(
            name="mdfast._C",
            sources=sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
        )
    ]


def _toolchain(torch) -> dict:
    """The C++ compiler cpp_extension calls, its version and its libstdc++; the compiler torch was
    built with; the libstdc++ this interpreter has loaded (Linux)."""
    from torch.utils.cpp_extension import get_cxx_compiler

    cxx = get_cxx_compiler()

    def ask(*args):
        try:
            out = subprocess.run([cxx, *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    runtime = ask("-print-file-name=libstdc++.so.6")
    built_with = re.search(r"- (GCC|clang) ([\d.]+)", torch.__config__.show())
    loaded = set()
    if Path("/proc/self/maps").exists():
        with open("/proc/self/maps") as maps:
            loaded = {os.path.realpath(line.split()[-1]) for line in maps if "libstdc++.so" in line}
    return {
        "cxx": cxx,
        "version": ask("-dumpfullversion", "-dumpversion"),
        "runtime": os.path.realpath(runtime) if os.path.isabs(runtime) else None,
        "torch_compiler": " ".join(built_with.groups()) if built_with else "unknown",
        "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        "loaded_runtime": sorted(loaded),
    }


def _describe(tc: dict) -> str:
    return (
        f"C++ compiler {tc['cxx']} ({tc['version'] or 'version unknown'}, libstdc++ "
        f"{tc['runtime'] or 'not found'}); torch was built with {tc['torch_compiler']} "
        f"(_GLIBCXX_USE_CXX11_ABI={int(tc['cxx11_abi'])}, set for this build too); this Python "
        f"loads libstdc++ {', '.join(tc['loaded_runtime']) or 'unknown'}"
    )


# A failed argument check in the built extension must reach Python as an exception.
_EXCEPTION_CHECK = """
import sys, torch
torch.ops.load_library(sys.argv[1])
try:
    torch.ops.mdfast.uniform_out(torch.empty(1, dtype=torch.float64), -1, 0)
except ValueError:
    sys.exit(0)
sys.exit(3)
"""


# seconds the check process may take (importing torch, loading the library) before the build
# goes on without the check, so a stuck child cannot hang an install or `make gpu-check`
_EXCEPTION_CHECK_TIMEOUT = 90


def _check_exceptions_raise(library: str, tc: dict) -> None:
    if os.environ.get("MDFAST_SKIP_BUILD_CHECK") == "1":
        return
    try:
        result = subprocess.run(
            [sys.executable, "-c", _EXCEPTION_CHECK, library],
            capture_output=True,
            text=True,
            timeout=_EXCEPTION_CHECK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        print(
            f"mdfast: warning: the post-build exception check did not finish within "
            f"{_EXCEPTION_CHECK_TIMEOUT} s and was stopped; whether C++ errors reach Python is "
            "not known"
        )
        return
    if result.returncode == 0:
        print("mdfast: post-build check: a failed argument check raises ValueError, as it should")
        return
    if result.returncode < 0 or result.returncode == 3:
        how = (
            f"died of {signal.Signals(-result.returncode).name}"
            if result.returncode < 0
            else "returned without the error"
        )
        raise SystemExit(
            f"mdfast: the built extension {library} {how} when an argument check failed, instead "
            f"of raising ValueError. {_describe(tc)}. The C++ error is thrown by torch and "
            "unwound through the extension's frames, so the extension must use the C++ runtime "
            "(libstdc++, libgcc_s) this Python loads: rebuild with the system compiler, e.g. "
            "`CXX=/usr/bin/g++ CC=/usr/bin/gcc pip install --no-build-isolation -e .`, or put "
            "the matching compiler first on PATH. (MDFAST_SKIP_BUILD_CHECK=1 skips this check.)"
        )
    print(f"mdfast: warning: could not run the post-build exception check: {result.stderr[-500:]}")


def _build_ext():
    import torch
    from torch.utils.cpp_extension import BuildExtension

    class Build(BuildExtension.with_options(use_ninja=True)):
        def build_extensions(self):
            tc = _toolchain(torch)
            print(f"mdfast: {_describe(tc)}")
            if tc["runtime"] and tc["loaded_runtime"] and tc["runtime"] not in tc["loaded_runtime"]:
                print(
                    "mdfast: warning: the compiler's libstdc++ is not the one this Python loads; "
                    "the post-build check tells whether C++ errors still reach Python"
                )
            super().build_extensions()
            for ext in self.extensions:
                _check_exceptions_raise(self.get_ext_fullpath(ext.name), tc)

    return Build


setup(
    packages=find_packages(include=["mdfast", "mdfast.*"]),
    ext_modules=_extensions(),
    cmdclass={"build_ext": _build_ext()},
)
