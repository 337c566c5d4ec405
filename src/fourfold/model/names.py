"""Model names: what a package and a registry accept (never a path: no ``/``, ``..`` or leading dot).

>>> validate_name("fraud-v2")
'fraud-v2'
"""

from __future__ import annotations

import re

from fourfold.errors import InvalidNameError

__all__ = ["validate_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_name(name: str) -> str:
    """Return ``name`` or raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..' or '/'"
        )
    return name
