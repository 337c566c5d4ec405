"""Model names and aliases: what a registry accepts (never a path: no ``/``, ``..`` or leading dot)."""

from __future__ import annotations

import re

from fourfold.errors import InvalidNameError

__all__ = ["validate_alias", "validate_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED_ALIASES = ("latest",)


def validate_name(name: str) -> str:
    """Return ``name`` or raise :class:`InvalidNameError`.

    >>> validate_name("fraud-v2")
    'fraud-v2'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..' or '/'"
        )
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidNameError(
            f"invalid alias {alias!r}: use 1-64 letters, digits, '_' or '-', starting with a letter"
        )
    if alias in RESERVED_ALIASES:
        raise InvalidNameError(f"alias {alias!r} is reserved: it always means the highest version")
    return alias
