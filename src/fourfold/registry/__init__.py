"""Where models live: the local registry, ``models:/`` URIs, and the MLflow adapter."""

from __future__ import annotations

from fourfold.registry.local import LocalRegistry, ModelVersion
from fourfold.registry.names import validate_alias, validate_name
from fourfold.registry.resolve import registry_kind, resolve
from fourfold.registry.uri import ModelURI, parse_uri

__all__ = [
    "LocalRegistry",
    "ModelURI",
    "ModelVersion",
    "parse_uri",
    "registry_kind",
    "resolve",
    "validate_alias",
    "validate_name",
]
