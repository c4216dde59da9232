"""The one switch for argument checks that need device values.

Shapes, dtypes, devices and scalar arguments are always checked, on the host, for free. Checks of
tensor *values* (a target out of range, a negative weight, an invalid digit row, a NaN in a row
that must be sampled) read device memory, which on a GPU means a host synchronisation per call: a
sampler making thousands of calls would wait on the GPU at every one, and a loop of them could
not be captured in a CUDA graph. So:

* CPU tensors: values are always checked (the CPU kernels do it as they go; it costs nothing).
  So is every call that runs the pure-PyTorch reference (no compiled kernel for the device).
* other devices: values are checked only with ``set_validation("full")`` (or ``MDFAST_VALIDATE=1``
  in the environment), and then every bad value raises the same error, naming the argument and
  the first bad row, as on the CPU. With the default ``"off"`` the kernels stay memory-safe and
  mark what they cannot compute instead of raising: a row with a bad target or digits gets a NaN
  loss, a row that cannot be sampled (NaN logits, nothing left to draw, an index outside the
  logits, invalid digits) gets token -1.

Under ``torch.compile`` the value checks are skipped while tracing (the compiled graph calls the
kernels, which check CPU values themselves).
"""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["get_validation", "set_validation", "validation"]

_MODES = ("full", "off")
_mode = "full" if os.environ.get("MDFAST_VALIDATE", "") == "1" else "off"


def set_validation(mode: str) -> str:
    """Set how ops check tensor values on non-CPU devices: ``"full"`` (check, one host sync per
    call) or ``"off"`` (default: no check that needs a sync). Returns the previous mode."""
    global _mode
    if mode not in _MODES:
        raise ValueError(f"mdfast: argument 'mode' must be 'full' or 'off', got {mode!r}")
    previous, _mode = _mode, mode
    return previous


def get_validation() -> str:
    """The current mode of :func:`set_validation`."""
    return _mode


@contextlib.contextmanager
def validation(mode: str):
    """``with mdfast.validation("full"): ...`` — :func:`set_validation` for a block."""
    previous = set_validation(mode)
    try:
        yield
    finally:
        set_validation(previous)


def checks_values_here(device: torch.device, kernel: bool) -> bool:
    """Whether the Python wrapper checks argument values itself: always before the reference,
    never before the CPU kernels (they check as they go), before other devices' kernels only in
    ``"full"`` mode; never while ``torch.compile`` traces."""
    if torch.compiler.is_compiling():
        return False
    if not kernel:
        return True
    return device.type != "cpu" and _mode == "full"
