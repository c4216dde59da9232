"""The vocabulary of the ops' argument contracts (the Python side of ``csrc/common/checks.h``).

Every op's contract is written once, in its family module (``mdfast/ops/<family>.py``), with these
helpers, and runs before the kernel and before the reference alike; the C++ kernels repeat it in
``csrc/common/<family>_args.h`` for direct ``torch.ops.mdfast.*`` calls, with the same exception
type naming the same argument (``tests/test_op_contract.py`` holds the two to each other). The
exception types follow the C++ macros: ``TORCH_CHECK`` -> RuntimeError (wrong dtype, rank, shape,
device), ``TORCH_CHECK_VALUE`` -> ValueError (a value out of range), ``TORCH_CHECK_INDEX`` ->
IndexError (an index out of range).
"""

from __future__ import annotations

from numbers import Integral, Real

import torch

_INT64_MAX = 2**63 - 1


# (the exact-type tests first: an ABC isinstance costs a microsecond, and ops are called often)
def is_int(value) -> bool:
    """An integer that is not a bool (Python or NumPy)."""
    return type(value) is int or (not isinstance(value, bool) and isinstance(value, Integral))


def is_real(value) -> bool:
    """A real number (Python or NumPy)."""
    return type(value) is float or type(value) is int or isinstance(value, Real)


def fail(message: str, error: type[Exception] = RuntimeError):
    """Raise ``error("mdfast: " + message)``."""
    raise error(f"mdfast: {message}")


def arg_int(value, name: str) -> int:
    """A Philox seed / offset: an integer (not a bool) in [0, 2^63), returned as a Python int."""
    if not is_int(value):
        fail(f"argument '{name}' must be an int, got {type(value).__name__}", TypeError)
    if not 0 <= value <= _INT64_MAX:
        fail(f"argument '{name}' must be in [0, 2**63), got {value}", ValueError)
    return int(value)


def non_negative(value: int, name: str) -> None:
    if value < 0:
        fail(f"argument '{name}' must be >= 0, got {value}", ValueError)


def dtype(t: torch.Tensor, name: str, expected: torch.dtype) -> None:
    if t.dtype != expected:
        fail(f"argument '{name}' must have dtype {expected}, got {t.dtype}")


def dtype_in(t: torch.Tensor, name: str, allowed: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        fail(f"argument '{name}' must have dtype {names}, got {t.dtype}")


def dim(t: torch.Tensor, name: str, expected: int) -> None:
    if t.dim() != expected:
        fail(f"argument '{name}' must be {expected}-dimensional, got shape {list(t.shape)}")


def shape(t: torch.Tensor, name: str, expected: tuple) -> None:
    if tuple(t.shape) != tuple(expected):
        fail(f"argument '{name}' must have shape {list(expected)}, got {list(t.shape)}")


def same_device(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        fail(f"argument '{name}' is on {t.device} but '{ref_name}' is on {ref.device}")


def no_grad(t: torch.Tensor | None, name: str) -> None:
    """A tensor the op treats as a constant must not ask for a gradient."""
    if t is not None and t.requires_grad and torch.is_grad_enabled():
        fail(
            f"argument '{name}' must not require grad (the loss is not differentiated with "
            f"respect to it); pass {name}.detach()",
            ValueError,
        )


def first_true(flags: torch.Tensor) -> int | None:
    """Index of the first True of a 1-d bool tensor, or None (reads the tensor on the host)."""
    hit = flags.nonzero()
    return int(hit[0, 0]) if hit.numel() else None
