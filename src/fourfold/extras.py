"""Optional dependencies: imported where they are needed, with an error that names the extra to install.

>>> require("json", "core", "reading JSON").__name__
'json'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fourfold.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency or raise :class:`MissingExtraError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc
