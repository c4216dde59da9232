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


def chisquare_against_law(observed: dict, law: dict, n: int) -> float:
    """p-value of counts ``observed`` (outcome -> count, ``n`` draws) against the exact ``law``
    (outcome -> probability): one bin per outcome expected at least 5 times, the rest pooled."""
    from scipy import stats

    outcomes = sorted(law, key=lambda y: -law[y])
    exp = [n * law[y] for y in outcomes]
    obs = [observed.get(y, 0) for y in outcomes]
    big = [i for i, e in enumerate(exp) if e >= 5]
    small = [i for i, e in enumerate(exp) if e < 5]
    e_bins = [exp[i] for i in big] + ([sum(exp[i] for i in small)] if small else [])
    o_bins = [obs[i] for i in big] + ([sum(obs[i] for i in small)] if small else [])
    if len(e_bins) == 1:  # a certain outcome
        return 1.0 if o_bins == [n] else 0.0
    return float(stats.chisquare(o_bins, e_bins).pvalue)
