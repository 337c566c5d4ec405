"""Resolving any model URI to a verified package: a path, the local registry, or MLflow's.

``models:/`` URIs go to MLflow when ``registry="mlflow"`` (or ``FOURFOLD_REGISTRY=mlflow``, or
``MLFLOW_TRACKING_URI`` is set and the setting is ``auto``), else to the local registry.
"""

from __future__ import annotations

import os
from typing import Literal

from fourfold.model.package import ModelPackage, load_package
from fourfold.registry.local import LocalRegistry
from fourfold.registry.uri import parse_uri
from fourfold.settings import Settings

__all__ = ["RegistryName", "registry_kind", "resolve"]

RegistryName = Literal["auto", "local", "mlflow"]


def registry_kind(registry: RegistryName | None = None) -> Literal["local", "mlflow"]:
    kind = registry or Settings().registry
    if kind == "auto":
        return "mlflow" if os.environ.get("MLFLOW_TRACKING_URI") else "local"
    return kind


def resolve(uri: str, *, registry: RegistryName | None = None, verify: bool = True) -> ModelPackage:
    """The package a URI names, with its files verified.

    >>> # resolve("models:/fraud/production").version
    """
    ref = parse_uri(uri)
    if ref.path is not None:
        return load_package(ref.path, verify=verify).with_version(None, str(ref.path))
    if registry_kind(registry) == "mlflow":
        from fourfold.registry.mlflow import resolve_mlflow

        return resolve_mlflow(ref, home=Settings().home)
    return LocalRegistry().resolve(ref, verify=verify)
