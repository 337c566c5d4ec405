"""Resolving ``models:/`` URIs against an MLflow model registry (the ``[mlflow]`` extra).

``models:/NAME/VERSION``, ``models:/NAME/ALIAS`` (MLflow 3 aliases; MLflow's legacy stage names such as
``Production`` are accepted when no alias of that name exists) and ``models:/NAME`` (the latest version)
are looked up in the registry MLflow itself is configured for (``MLFLOW_TRACKING_URI`` /
``MLFLOW_REGISTRY_URI``). The version's artifacts are downloaded once and converted into a fourfold
package cached at ``$FOURFOLD_HOME/mlflow-cache/NAME/VERSION``; later resolves of that version reuse it.

Flavors: ``sklearn``, ``xgboost``, ``lightgbm``; a ``python_function`` model that also carries one of these
is read through that native flavor. A custom ``python_function`` model cannot become a package
(:class:`UnsupportedModelError`). The signature comes from the MLflow column signature (else from the
feature names the model recorded); the task is the one fourfold's flavor finds in the model.

Trust: the model is loaded with MLflow's own loaders, so this trusts MLflow's own format. MLflow 3 stores
scikit-learn models with skops (honouring the ``skops_trusted_types`` recorded at logging), but older or
Databricks models are pickle / cloudpickle files, which run whatever code they hold when loaded. Loading
them is governed by MLflow's own switch: with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` they are
refused (:class:`UntrustedModelError`). The package written from it is skops / native, like any other.

    >>> # os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///mlflow.db"
    >>> # fourfold.load_predictor("models:/churn-model/production", registry="mlflow").version
    >>> # '3'
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock

from fourfold.errors import (
    InvalidURIError,
    ModelNotFoundError,
    PackageError,
    UnsupportedModelError,
    UntrustedModelError,
)
from fourfold.extras import require
from fourfold.model.flavors import flavor_for
from fourfold.model.package import ModelPackage, load_package, save_model
from fourfold.model.signature import Feature, Signature
from fourfold.registry.uri import ModelURI

__all__ = ["list_mlflow", "resolve_mlflow"]

_PURPOSE = "resolving models:/ URIs in MLflow"
_DTYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32", "boolean": "bool"}
_NATIVE = ("xgboost", "lightgbm", "sklearn")  # MLflow flavors fourfold converts, preferred in this order
_STAGES = ("production", "staging", "archived")
_AUTO_NAMES = re.compile(r"Column_\d+")  # LightGBM's names for unnamed columns


def resolve_mlflow(ref: ModelURI, *, home: Path) -> ModelPackage:
    """The fourfold package of the MLflow model version ``ref`` names, converted once and cached."""
    mlflow = require("mlflow", "mlflow", _PURPOSE)
    if ref.name is None:
        raise InvalidURIError(f"{ref} is not a models:/ URI")
    name = ref.name
    mv = _find_version(mlflow.MlflowClient(), name, ref)
    version = int(mv.version)
    meta: dict[str, Any] = {
        "model_uri": f"models:/{name}/{version}",
        "name": name,
        "version": version,
        "run_id": mv.run_id or None,
        "source": str(mv.source),
        "tracking_uri": _public(mlflow.get_tracking_uri()),
        "registry_uri": _public(mlflow.get_registry_uri()),
    }
    target = Path(home) / "mlflow-cache" / name / str(version)
    package = _cached(target, meta)
    if package is None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target.parent / f".{version}.lock")):
            package = _cached(target, meta) or _build(target, meta)
    return package.with_version(str(version), f"models:/{name}/{version}")


def _find_version(client: Any, name: str, ref: ModelURI) -> Any:
    errors = require("mlflow.exceptions", "mlflow", _PURPOSE)
    try:
        registered = client.get_registered_model(name)
    except errors.MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(m.name for m in client.search_registered_models())
        raise ModelNotFoundError(
            f"MLflow has no registered model {name!r}; registered models: {', '.join(names) or 'none'}"
        ) from None
    versions = {int(v.version): v for v in _all_versions(client, name)}
    aliases = {str(a): int(v) for a, v in dict(registered.aliases or {}).items()}
    if ref.version is not None:
        wanted, what = versions.get(ref.version), f"version {ref.version}"
    elif ref.alias is not None:
        what = f"alias {ref.alias!r}"
        if ref.alias in aliases:
            wanted = versions.get(aliases[ref.alias])
        else:
            stage = ref.alias.lower()
            staged = [
                n for n, v in versions.items() if stage in _STAGES and str(v.current_stage).lower() == stage
            ]
            wanted = versions[max(staged)] if staged else None
    else:
        wanted, what = (versions[max(versions)] if versions else None), "versions"
    if wanted is None:
        listed = ", ".join(map(str, sorted(versions))) or "none"
        shown = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
        raise ModelNotFoundError(f"MLflow model {name!r} has no {what}; versions: {listed}; aliases: {shown}")
    return wanted


def _all_versions(client: Any, name: str) -> list[Any]:
    found: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(f"name='{name}'", page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _public(uri: str) -> str:
    """The URI without credentials (it is written into the package metadata)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=host))


def _cached(target: Path, meta: Mapping[str, Any]) -> ModelPackage | None:
    """The cached package when it verifies and was built from this very registry and model version."""
    if not target.is_dir():
        return None
    try:
        package = load_package(target)
    except PackageError:
        return None
    old = package.manifest.get("metadata", {}).get("mlflow", {})
    return package if all(old.get(k) == meta[k] for k in ("registry_uri", "source")) else None


def _build(target: Path, meta: dict[str, Any]) -> ModelPackage:
    """Download, convert and move the package into place in one rename (a crash leaves no half cache)."""
    artifacts = require("mlflow.artifacts", "mlflow", _PURPOSE)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        local = Path(
            artifacts.download_artifacts(artifact_uri=meta["model_uri"], dst_path=str(work / "mlflow"))
        )
        info = require("mlflow.models", "mlflow", _PURPOSE).Model.load(str(local))
        meta["run_id"] = meta["run_id"] or info.run_id
        model, options = _load_native(local, dict(info.flavors), meta["model_uri"])
        flavor = flavor_for(model)
        probe = work / "probe"
        probe.mkdir()
        saved = flavor.save(model, probe, dict(options))  # the task and classes, as save_model finds them
        features = _features(info.signature, meta["model_uri"])
        if features is None:
            features = _model_features(model, saved.options, meta["model_uri"])
        signature = Signature.for_task(saved.task, features, classes=saved.classes)
        built = save_model(
            model,
            work / "package",
            name=meta["name"],
            signature=signature,
            metadata={"mlflow": meta},
            **options,
        )
        if target.exists():
            target.rename(work / "stale")
        built.path.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return load_package(target)


def _load_native(local: Path, flavors: dict[str, Any], uri: str) -> tuple[Any, dict[str, Any]]:
    """The model through MLflow's loader of its native flavor (preferred over ``python_function``)."""
    kind = next((f for f in _NATIVE if f in flavors), None)
    if kind is None:
        loader = flavors.get("python_function", {}).get("loader_module")
        raise UnsupportedModelError(
            f"MLflow model {uri} has flavor(s) {', '.join(flavors) or 'none'} (python_function loader "
            f"{loader}): a custom python_function model cannot become a fourfold package; log the model "
            "with mlflow.sklearn, mlflow.xgboost or mlflow.lightgbm"
        )
    conf = flavors[kind]
    if kind == "xgboost" and not str(conf.get("model_class", "xgboost.")).startswith("xgboost."):
        raise UnsupportedModelError(
            f"MLflow model {uri}: unexpected XGBoost model class {conf['model_class']!r}"
        )
    errors = require("mlflow.exceptions", "mlflow", _PURPOSE)
    try:
        model = require(f"mlflow.{kind}", "mlflow", _PURPOSE).load_model(str(local))
    except errors.MlflowException as exc:
        if "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in str(exc):
            raise UntrustedModelError(
                f"MLflow refuses to deserialize model {uri} (MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false); "
                "set it to true only if you trust this registry"
            ) from None
        raise
    # The types the MLflow model's author declared trusted when logging it with skops.
    trusted = list(conf.get("skops_trusted_types") or [])
    return model, ({"trusted_types": trusted} if trusted and flavor_for(model).name == "sklearn" else {})


def _features(signature: Any, uri: str) -> list[Feature] | None:
    """The inputs of a column-based MLflow signature, in its order; ``None`` for a tensor or no signature."""
    inputs = getattr(signature, "inputs", None)
    if inputs is None or inputs.is_tensor_spec() or not inputs.has_input_names():
        return None
    features = []
    for col in inputs.inputs:
        kind = str(getattr(col.type, "name", col.type))
        if kind not in _DTYPES:
            raise UnsupportedModelError(
                f"MLflow model {uri}: input column {col.name!r} has type {kind}; fourfold models take "
                f"numeric columns ({', '.join(_DTYPES)}) - encode categories as integer codes"
            )
        features.append(Feature(str(col.name), _DTYPES[kind], nullable=not getattr(col, "required", True)))
    return features


def _model_features(model: Any, options: Mapping[str, Any], uri: str) -> list[Feature]:
    """The feature names the model recorded itself, when the MLflow model has no column signature."""
    names = getattr(model, "feature_names_in_", None)
    names = [str(n) for n in (names if names is not None else options.get("feature_names") or ())]
    if not names or all(_AUTO_NAMES.fullmatch(n) for n in names):
        raise UnsupportedModelError(
            f"MLflow model {uri} has no column-based signature and its model records no feature names; "
            "a signature is needed: log it with signature=mlflow.models.infer_signature(X_dataframe, ...)"
        )
    return [Feature(n) for n in names]


def list_mlflow() -> list[dict[str, Any]]:
    """Every registered model version in MLflow's registry, newest last per model."""
    mlflow = require("mlflow", "mlflow", _PURPOSE)
    client = mlflow.MlflowClient()
    rows: list[dict[str, Any]] = []
    for model in client.search_registered_models():
        by_version: dict[int, list[str]] = {}
        for alias, version in dict(model.aliases or {}).items():
            by_version.setdefault(int(version), []).append(str(alias))
        for mv in sorted(_all_versions(client, model.name), key=lambda v: int(v.version)):
            version = int(mv.version)
            rows.append(
                {
                    "name": model.name,
                    "version": version,
                    "aliases": sorted(by_version.get(version, [])),
                    "stage": str(mv.current_stage or "None"),
                    "run_id": mv.run_id or None,
                }
            )
    return rows
