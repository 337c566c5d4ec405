"""Model URIs: a package path, ``models:/NAME/VERSION``, ``models:/NAME/ALIAS``, ``models:/NAME@ALIAS``
or ``models:/NAME`` (the latest version).

    >>> parse_uri("models:/fraud/production")
    ModelURI(name='fraud', version=None, alias='production', path=None)
    >>> parse_uri("models:/fraud/3").version
    3
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fourfold.errors import InvalidURIError
from fourfold.registry.names import validate_name

__all__ = ["ModelURI", "parse_uri"]

SCHEME = "models:/"


@dataclass(frozen=True)
class ModelURI:
    name: str | None
    version: int | None = None
    alias: str | None = None
    path: Path | None = None

    @property
    def is_registry(self) -> bool:
        return self.path is None

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        ref = self.version if self.version is not None else (self.alias or "latest")
        return f"{SCHEME}{self.name}/{ref}"


def parse_uri(uri: str) -> ModelURI:
    if not uri.startswith(SCHEME):
        if "://" in uri:
            raise InvalidURIError(f"unsupported model URI {uri!r}: use a path or models:/NAME/VERSION|ALIAS")
        return ModelURI(None, path=Path(uri))
    rest = uri[len(SCHEME) :].strip("/")
    if "@" in rest and "/" not in rest:
        name, _, ref = rest.partition("@")
    else:
        name, _, ref = rest.partition("/")
    if not name or "/" in ref:
        raise InvalidURIError(
            f"cannot parse model URI {uri!r}: expected models:/NAME/VERSION or models:/NAME/ALIAS"
        )
    validate_name(name)
    if not ref or ref == "latest":
        return ModelURI(name)
    if ref.isdigit():
        if int(ref) < 1:
            raise InvalidURIError(f"model versions start at 1, got {ref!r} in {uri!r}")
        return ModelURI(name, version=int(ref))
    return ModelURI(name, alias=ref)
