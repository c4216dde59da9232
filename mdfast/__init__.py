"""mdfast: fast, exact kernels, samplers and training for masked discrete diffusion models.

The op surface lives in :mod:`mdfast.ops` (``torch.ops.mdfast.*`` underneath), the pure-PyTorch
twin of every op in :mod:`mdfast.reference`; :func:`set_validation` is the one switch for argument
checks that need device values. The generic packages never import :mod:`mdfast.experiments`;
experiments register what they add (:mod:`mdfast.experiments.registry`).
"""

from __future__ import annotations

import torch

from mdfast import _extension, ops, reference
from mdfast.ops import get_validation, set_validation, validation

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "build_info",
    "get_validation",
    "ops",
    "reference",
    "set_validation",
    "validation",
]

# Heavier subpackages load on first use: `mdfast.sampling`, `mdfast.losses`, ...
_LAZY_SUBMODULES = frozenset(
    {
        "baselines",
        "data",
        "diffusion",
        "digits",
        "losses",
        "metrics",
        "models",
        "prime",
        "rng",
        "sampling",
        "schedules",
        "train",
    }
)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"mdfast.{name}")
    raise AttributeError(f"module 'mdfast' has no attribute {name!r}")


def build_info() -> dict:
    """How this mdfast was built and what it runs on.

    Keys: ``version``, ``torch`` (running torch), ``torch_cuda`` (CUDA version torch was built
    with), ``extension`` (whether ``mdfast._C`` loaded), ``extension_error`` (why not),
    ``backends`` (compiled kernel backends, e.g. ``["CPU", "CUDA"]``), ``compiled`` (the
    extension's own record: torch version it was compiled against, CUDA version and arch list,
    OpenMP, compiler), ``cuda_archs`` (the code that arch list compiles to, e.g. ``["sm_80",
    "sm_90", "compute_90"]``), ``cuda_available`` (a GPU is visible now), ``device`` (the current
    GPU's attributes, theoretical bandwidth and the kernel image it runs, see
    :func:`mdfast.device_info.cuda_device`; None without a GPU) and ``ops`` (registered ops).
    """
    from mdfast import device_info

    ops_registered = sorted(
        name.split("::", 1)[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("mdfast::")
    )
    return {
        "version": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension": _extension._C is not None,
        "extension_error": _extension.LOAD_ERROR,
        "backends": sorted(b.upper() for b in _extension.BACKENDS),
        "compiled": dict(_extension.COMPILED),
        "cuda_archs": device_info.parse_arch_list(_extension.COMPILED.get("cuda_arch_list")),
        "cuda_available": torch.cuda.is_available(),
        "device": device_info.cuda_device(),
        "ops": ops_registered,
    }
