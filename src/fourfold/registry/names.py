"""Model names and aliases: what a registry accepts (a name is the package's rule:
:mod:`fourfold.model.names`)."""

from __future__ import annotations

import re

from fourfold.errors import InvalidNameError
from fourfold.model.names import validate_name

__all__ = ["validate_alias", "validate_name"]

_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED_ALIASES = ("latest",)


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidNameError(
            f"invalid alias {alias!r}: use 1-64 letters, digits, '_' or '-', starting with a letter"
        )
    if alias in RESERVED_ALIASES:
        raise InvalidNameError(f"alias {alias!r} is reserved: it always means the highest version")
    return alias
