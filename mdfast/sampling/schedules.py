"""Deprecated alias: alpha(t) is :func:`mdfast.schedules.alpha_at` and the ReMDM rates live in
:mod:`mdfast.sampling.remask_rates`."""

from __future__ import annotations

import warnings

from mdfast.sampling.remask_rates import (  # noqa: F401
    dfm_step,
    loop_alpha,
    sigma_cap,
    sigma_forward_backward,
    sigma_max,
    sigma_rescale,
)
from mdfast.schedules import alpha_at as alpha  # noqa: F401

warnings.warn(
    "mdfast.sampling.schedules is deprecated: use mdfast.schedules.alpha_at and "
    "mdfast.sampling.remask_rates",
    DeprecationWarning,
    stacklevel=2,
)
