"""Deprecated alias of :mod:`mdfast.digits` (MDM-Prime's digit and super-token codecs), kept so
``import mdfast.prime`` and ``from mdfast.prime import encode`` still work."""

from __future__ import annotations

import warnings

from mdfast.digits import (  # noqa: F401
    __all__,
    decode,
    encode,
    powers,
    prime_base,
    smallest_class,
    super_decode,
    super_encode,
    to_digits,
)

warnings.warn(
    "mdfast.prime is deprecated: the digit codec is mdfast.digits (the MDM-Prime module is "
    "mdfast.diffusion.Prime)",
    DeprecationWarning,
    stacklevel=2,
)
