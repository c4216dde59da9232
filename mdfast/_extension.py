"""Loads the compiled kernels (``mdfast._C``) once and says which backends they cover.

Importing ``mdfast._C`` runs the static ``TORCH_LIBRARY`` registrations, after which every op is
reachable as ``torch.ops.mdfast.<name>``. When the extension is missing (a source checkout that was
never built, a torch it was not built for, or ``MDFAST_DISABLE_EXTENSION=1``), mdfast warns once,
naming why, and every op in :mod:`mdfast.ops` falls back to :mod:`mdfast.reference`.
"""

from __future__ import annotations

import os
import warnings

import torch

_C = None
LOAD_ERROR: str | None = None
COMPILED: dict = {}

if os.environ.get("MDFAST_DISABLE_EXTENSION", "") == "1":
    LOAD_ERROR = "disabled by MDFAST_DISABLE_EXTENSION=1"
else:
    try:
        from mdfast import _C

        COMPILED = dict(_C.build_info())
    except ImportError as exc:  # not built, or built against another torch
        LOAD_ERROR = f"{type(exc).__name__}: {exc}"

if _C is None:
    warnings.warn(
        f"mdfast: compiled kernels are not available ({LOAD_ERROR}); every op runs its "
        "pure-PyTorch reference. Build them with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )
elif COMPILED.get("torch_version") != torch.__version__:
    warnings.warn(
        f"mdfast: kernels were compiled against torch {COMPILED.get('torch_version')} but torch "
        f"{torch.__version__} is running; rebuild mdfast if ops misbehave.",
        RuntimeWarning,
        stacklevel=2,
    )

#: Whether ``torch.ops.mdfast.*`` exist (their fake impls and autograd are then registered).
has_ops: bool = _C is not None

#: Device types whose kernels were compiled, e.g. ``{"cpu", "cuda"}``.
BACKENDS: frozenset[str] = frozenset(
    () if _C is None else (("cpu", "cuda") if COMPILED.get("cuda") else ("cpu",))
)


def has_kernel(device: torch.device) -> bool:
    """True when ops on tensors of ``device`` run compiled kernels rather than the reference."""
    return device.type in BACKENDS
