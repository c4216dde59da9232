"""Helpers shared by the op tests: poisoned outputs and the 'every element written' check."""

from __future__ import annotations

import torch


def poisoned(shape, dtype: torch.dtype, device) -> torch.Tensor:
    """An output buffer whose every element is an impossible value (NaN, or the dtype's minimum
    for integers), so a kernel that skips an element is caught."""
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.full(shape, torch.iinfo(dtype).min, dtype=dtype, device=device)


def assert_all_written(out: torch.Tensor) -> None:
    if out.dtype.is_floating_point:
        bad = torch.isnan(out)
    else:
        bad = out == torch.iinfo(out.dtype).min
    assert not bad.any(), f"{int(bad.sum())} of {out.numel()} output elements were never written"
