"""Old import paths kept as deprecated aliases of the modules that moved."""

from __future__ import annotations

import importlib
import sys
import warnings

__all__ = ["alias_module"]


def alias_module(old: str, new: str) -> None:
    """Called from module ``old`` while it is imported: make ``old`` the module ``new`` itself
    (``sys.modules[old] is sys.modules[new]``, so attributes set through either path are seen by
    both) and warn that ``old`` is deprecated."""
    warnings.warn(f"mdfast: {old} is deprecated; import {new}", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
