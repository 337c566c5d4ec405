"""The model package: one directory, one manifest, the same for every pattern.

::

    fraud/
      fourfold.yaml          manifest: name, flavor, signature, versions, sha256 of every file, runtimes
      artifacts/model.ubj    the model in its framework's own format
      sample.parquet         a few input rows (signature inference, parity checks, latency probes)
      onnx/model.onnx        written by ``fourfold compile`` with its parity report

    >>> from sklearn.linear_model import LogisticRegression
    >>> import numpy as np, pyarrow as pa, tempfile
    >>> x = pa.table({"a": np.arange(8.0), "b": np.arange(8.0) % 2})
    >>> m = LogisticRegression().fit(np.c_[x["a"], x["b"]], [0, 1] * 4)
    >>> pkg = save_model(m, tempfile.mkdtemp() + "/m", name="toy", sample=x)
    >>> load_package(pkg.path).signature.feature_names
    ('a', 'b')
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from fourfold.errors import PackageError, TamperedPackageError
from fourfold.model.flavors import NativeModel, flavor_for, get_flavor
from fourfold.model.names import validate_name
from fourfold.model.signature import Feature, Signature, infer_signature

if TYPE_CHECKING:
    from fourfold.features.definitions import FeatureSet

__all__ = [
    "MANIFEST",
    "ModelPackage",
    "load_package",
    "replace_dir",
    "save_model",
    "sha256_file",
    "write_manifest",
]

MANIFEST = "fourfold.yaml"
FEATURES = "features.yaml"
FORMAT = "fourfold/1"
SAMPLE_ROWS = 256
_RUNTIMES = ("native", "onnx", "c")


@dataclass(frozen=True)
class ModelPackage:
    """A verified package on disk. ``version`` is set when it was resolved through a registry."""

    path: Path
    manifest: dict[str, Any]
    signature: Signature
    version: str | None = None
    uri: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def flavor(self) -> str:
        return str(self.manifest["flavor"])

    @property
    def threshold(self) -> float:
        return float(self.manifest.get("threshold", 0.5))

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.manifest.get("flavor_options", {}))

    @property
    def runtimes(self) -> dict[str, Any]:
        return dict(self.manifest.get("runtimes", {}))

    def serving_runtime(self) -> str:
        """The runtime every pattern scores with unless told otherwise: the one ``fourfold compile``
        measured and recorded (``serving.runtime`` in the manifest); for a package compiled before that
        was recorded, ONNX when its conversion passed parity; else the native library."""
        return self.serving_order()[0]

    def serving_order(self) -> list[str]:
        """The verified runtimes, the measured choice first, then the ones to fall back to when it
        cannot be loaded here (a C library built for another platform), ending with ``native``."""
        serving = self.manifest.get("serving", {})
        order = [str(n) for n in serving.get("order", [serving.get("runtime")]) if n in _RUNTIMES]
        if not order:
            onnx = self.runtimes.get("onnx")
            order = ["onnx"] if onnx and onnx.get("verified") else []
        return [*dict.fromkeys([*order, "native"])]

    @property
    def label(self) -> str:
        return f"model {self.name!r}" + (f" v{self.version}" if self.version else "")

    def with_version(self, version: str | None, uri: str | None = None) -> ModelPackage:
        return replace(self, version=version, uri=uri)

    def load_native(self, *, trusted: bool = False) -> NativeModel:
        """The model in its own library (files were verified when the package was loaded)."""
        return get_flavor(self.flavor).load(self.path / "artifacts", self.options, trusted=trusted)

    def features(self) -> FeatureSet | None:
        """The feature set stored with the model (its definitions, in the signature's order), or None."""
        path = self.path / FEATURES
        if not path.exists():
            return None
        from fourfold.features.definitions import FeatureSet

        return FeatureSet.load(path)

    def sample(self) -> Any:
        """The stored sample rows as an Arrow table, or ``None``."""
        path = self.path / "sample.parquet"
        if not path.exists():
            return None
        import pyarrow.parquet as pq

        return pq.read_table(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(
    model: Any,
    path: str | os.PathLike[str],
    *,
    name: str,
    signature: Signature | None = None,
    sample: Any = None,
    metadata: Mapping[str, Any] | None = None,
    threshold: float | None = None,
    features: FeatureSet | None = None,
    overwrite: bool = False,
    **flavor_options: Any,
) -> ModelPackage:
    """Write ``model`` as a package directory at ``path`` and return it.

    The signature comes from ``signature``, else is inferred from ``sample`` (an Arrow table, a pandas
    DataFrame or a dict of arrays), else from the feature names the model itself recorded. Flavor options:
    ``serializer`` / ``trusted_types`` (scikit-learn), ``format`` (XGBoost), ``task``, ``torch_format``,
    ``torch_output``, ``module_class``, ``init_kwargs`` (PyTorch).

    ``features`` (a :class:`~fourfold.features.FeatureSet`) is stored as ``features.yaml`` in the
    signature's order, so every pattern computes the model's inputs from the same definitions.
    """
    validate_name(name)
    target = Path(path)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise PackageError(f"{target} already exists and is not empty; pass overwrite=True to replace it")
    flavor = flavor_for(model)
    inputs = _input_features(model, signature, sample)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / "artifacts").mkdir()
        options = dict(flavor_options)
        if inputs is not None:
            options["n_features"] = len(inputs)
        saved = flavor.save(model, staging / "artifacts", options)
        if inputs is None:
            names = saved.options.get("feature_names") or [f"f{i}" for i in range(saved.n_features or 0)]
            if not names:
                raise PackageError("cannot tell the model's inputs: pass signature= or sample=")
            inputs = [Feature(n) for n in names]
        if saved.n_features is not None and saved.n_features != len(inputs):
            raise PackageError(
                f"the model takes {saved.n_features} features but the signature lists {len(inputs)}: "
                f"{', '.join(f.name for f in inputs)}"
            )
        if signature is None:
            signature = Signature.for_task(saved.task, inputs, classes=saved.classes)
        files = [f"artifacts/{f}" for f in saved.files]
        if features is not None:
            features.select(signature.feature_names).dump(staging / FEATURES)
            files.append(FEATURES)
        if sample is not None:
            _write_sample(sample, signature, staging / "sample.parquet")
            files.append("sample.parquet")
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "flavor": flavor.name,
            "task": signature.task,
            "threshold": 0.5 if threshold is None else float(threshold),
            "decision": threshold is not None,  # an explicit threshold is a decision rule the server reports
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": _versions(saved.versions),
            "signature": signature.to_dict(),
            "flavor_options": saved.options,
            "metadata": dict(metadata or {}),
            "files": {f: sha256_file(staging / f) for f in files},
            "runtimes": {},
        }
        write_manifest(staging, manifest)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ModelPackage(target, manifest, signature)


def _input_features(model: Any, signature: Signature | None, sample: Any) -> list[Feature] | None:
    if signature is not None:
        return list(signature.inputs)
    if sample is not None:
        return list(infer_signature(sample, task="regression").inputs)
    names = getattr(model, "feature_names_in_", None)
    return [Feature(str(n)) for n in names] if names is not None else None


def _write_sample(sample: Any, signature: Signature, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fourfold.model.columns import as_columns

    columns = as_columns(sample)
    n = min(SAMPLE_ROWS, len(next(iter(columns.values()))))
    table = pa.table({f.name: np.asarray(columns[f.name][:n]) for f in signature.inputs if f.name in columns})
    pq.write_table(table, path)


def _versions(framework: Mapping[str, str]) -> dict[str, str]:
    from fourfold._version import __version__

    base = {"python": platform.python_version(), "fourfold": __version__, "numpy": np.__version__}
    return base | {k: str(v) for k, v in framework.items()}  # torch's version is a str subclass


def replace_dir(staging: Path, target: Path) -> None:
    """Put the directory ``staging`` at ``target``, replacing what is there: a reader sees the old
    directory or the new one, never a mix of both."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Write the manifest atomically (a reader sees the old or the new one, never half of one)."""
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(yaml.safe_dump(dict(manifest), sort_keys=False))
    os.replace(tmp, directory / MANIFEST)


def _safe_loader() -> Any:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_package(path: str | os.PathLike[str], *, verify: bool = True) -> ModelPackage:
    """Read a package and verify the sha256 of every file; a changed, missing or extra file is refused."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise PackageError(f"{root} is not a fourfold model package (no {MANIFEST})")
    manifest = yaml.load(manifest_path.read_text(), Loader=_safe_loader())
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{manifest_path} is not a {FORMAT} manifest")
    if verify:
        verify_files(root, manifest)
    return ModelPackage(root, manifest, Signature.from_dict(manifest["signature"]))


def verify_files(root: Path, manifest: Mapping[str, Any]) -> None:
    listed: dict[str, str] = manifest.get("files", {})
    for rel, expected in listed.items():
        file = root / rel
        if not file.is_file():
            raise TamperedPackageError(f"package {root}: file {rel} listed in the manifest is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise TamperedPackageError(
                f"package {root}: {rel} has sha256 {actual[:16]}..., the manifest says {expected[:16]}...; "
                "the file was changed after the package was written - refusing to load it"
            )
    for sub in ("artifacts", "onnx", "c"):
        for file in (root / sub).rglob("*") if (root / sub).is_dir() else ():
            rel = file.relative_to(root).as_posix()
            if file.is_file() and rel not in listed:
                raise TamperedPackageError(f"package {root}: {rel} is not listed in the manifest")
