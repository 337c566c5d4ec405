"""fourfold: one trained model, served online, in batch, on streams and embedded - the same answer
everywhere.

    >>> import fourfold
    >>> # pkg = fourfold.save_model(model, "./fraud", name="fraud", sample=train_table)
    >>> # fourfold.LocalRegistry().register(pkg, name="fraud", aliases=["production"])
    >>> # p = fourfold.load_predictor("models:/fraud/production")
    >>> # p.predict(batch)["score"]
"""

from __future__ import annotations

import os

from fourfold._version import __version__
from fourfold.errors import (
    ConversionError,
    FeatureTypeError,
    FourfoldError,
    InputError,
    InvalidNameError,
    InvalidURIError,
    MissingExtraError,
    MissingFeatureError,
    ModelNotFoundError,
    NullFeatureError,
    PackageError,
    ParityError,
    RegistryError,
    ShapeError,
    TamperedPackageError,
    UnknownFeatureError,
    UnsupportedModelError,
    UntrustedModelError,
)
from fourfold.model import (
    Feature,
    ModelPackage,
    Output,
    Predictor,
    Signature,
    infer_signature,
    load_package,
    save_model,
)
from fourfold.model.compile import compile_package
from fourfold.model.parity import ParityReport
from fourfold.model.predictor import RuntimeName
from fourfold.registry import LocalRegistry, ModelVersion, parse_uri, resolve
from fourfold.registry.resolve import RegistryName

__all__ = [
    "ConversionError",
    "Feature",
    "FeatureTypeError",
    "FourfoldError",
    "InputError",
    "InvalidNameError",
    "InvalidURIError",
    "LocalRegistry",
    "MissingExtraError",
    "MissingFeatureError",
    "ModelNotFoundError",
    "ModelPackage",
    "ModelVersion",
    "NullFeatureError",
    "Output",
    "PackageError",
    "ParityError",
    "Predictor",
    "RegistryError",
    "ShapeError",
    "Signature",
    "TamperedPackageError",
    "UnknownFeatureError",
    "UnsupportedModelError",
    "UntrustedModelError",
    "__version__",
    "compile_model",
    "infer_signature",
    "load_package",
    "load_predictor",
    "parse_uri",
    "resolve",
    "save_model",
]


def load_predictor(
    uri: str,
    *,
    runtime: RuntimeName = "auto",
    strict: bool = False,
    trusted: bool = False,
    threads: int = 1,
    registry: RegistryName | None = None,
) -> Predictor:
    """Resolve ``uri`` (a path or ``models:/NAME/VERSION|ALIAS``) and build its :class:`Predictor`."""
    return Predictor(
        resolve(uri, registry=registry), runtime=runtime, strict=strict, trusted=trusted, threads=threads
    )


def compile_model(
    model: str | os.PathLike[str] | ModelPackage,
    *,
    force: bool = False,
    trusted: bool = False,
    probes: int = 3000,
    seed: int = 0,
    c: bool = False,
) -> ParityReport:
    """Convert a package's model to ONNX, prove parity, and record the runtime every pattern serves it
    with: ``model`` is a directory, a ``models:/NAME/VERSION|ALIAS`` URI or a loaded package. ``c=True``
    also compiles a tree ensemble to a C library (the ``trees`` extra and a C compiler).

        >>> # report = fourfold.compile_model("models:/fraud/3"); report.passed
    """
    pkg = model if isinstance(model, ModelPackage) else resolve(os.fspath(model))
    return compile_package(pkg, force=force, trusted=trusted, probes=probes, seed=seed, c=c)
