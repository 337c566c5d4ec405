"""``fourfold compile``: convert a package's model to ONNX, check it, prove parity, store it.

    >>> # report = compile_model("models:/fraud/3")      # refuses when parity fails
    >>> # report = compile_model("./pkg", force=True)    # stores it unverified: auto keeps native

Steps: the flavor's converter (skl2onnx with zipmap off, onnxmltools for XGBoost / LightGBM,
``torch.onnx.export`` for PyTorch) -> ``onnx.checker.check_model(full_check=True)`` -> an ONNX Runtime
session as production builds it -> parity against the native model on the stored sample plus split and
boundary probes -> ``onnx/model.onnx`` and the report written into the package.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import numpy as np

from fourfold.errors import ConversionError, FourfoldError, ParityError
from fourfold.model.flavors import get_flavor
from fourfold.model.flavors.base import require
from fourfold.model.inputs import to_matrix
from fourfold.model.package import ModelPackage, load_package, sha256_file, write_manifest
from fourfold.model.parity import ParityReport, boundary_probes, compare, split_probes, tree_splits
from fourfold.model.runtimes import OnnxRuntime

__all__ = ["compile_model"]

ONNX_FILE = "onnx/model.onnx"


def compile_model(
    model: str | os.PathLike[str] | ModelPackage,
    *,
    force: bool = False,
    trusted: bool = False,
    probes: int = 3000,
    seed: int = 0,
) -> ParityReport:
    """Add a verified ONNX runtime to a package (a path, a ``models:/`` URI, or a loaded package)."""
    if isinstance(model, ModelPackage):
        pkg = load_package(model.path)
    else:
        from fourfold.registry.resolve import resolve

        pkg = resolve(os.fspath(model))
    onnx = require("onnx", "onnx", "compiling to ONNX")
    ort = require("onnxruntime", "onnx", "compiling to ONNX")
    flavor = get_flavor(pkg.flavor)
    n_features = len(pkg.signature.inputs)
    try:
        proto, converter = flavor.to_onnx(pkg.path / "artifacts", pkg.options, n_features, trusted=trusted)
        onnx.checker.check_model(proto, full_check=True)
        payload = proto.SerializeToString()
        runtime = OnnxRuntime(payload, task=pkg.signature.task)
    except FourfoldError:
        raise
    except Exception as exc:
        raise ConversionError(f"converting {pkg.label} ({pkg.flavor}) to ONNX failed: {exc}") from exc

    native = pkg.load_native(trusted=trusted)
    report = _parity(pkg, native.predict_raw, runtime.predict_raw, proto, probes=probes, seed=seed)
    if not report.passed and not force:
        worst = report.worst
        raise ParityError(
            f"{pkg.label}: the ONNX conversion fails parity and was not stored: {report.summary()}; "
            f"worst in {worst.get('group')}: native {worst.get('reference')} "
            f"vs onnx {worst.get('candidate')}. "
            "Use force=True (--force) to store it anyway; the predictor will then keep the native runtime "
            "unless runtime='onnx' is asked for"
        )
    target = pkg.path / ONNX_FILE
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, target)
    manifest = dict(pkg.manifest)
    manifest["files"] = dict(manifest["files"]) | {ONNX_FILE: sha256_file(target)}
    manifest["runtimes"] = dict(manifest.get("runtimes", {})) | {
        "onnx": {
            "file": ONNX_FILE,
            "verified": report.passed,
            "forced": not report.passed,
            "input_dtype": np.dtype(runtime.input_dtype).name,
            "opset": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
            "onnx_version": onnx.__version__,
            "onnxruntime_version": ort.__version__,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "parity": report.to_dict(),
            **converter,
        }
    }
    write_manifest(pkg.path, manifest)
    return report


def _parity(
    pkg: ModelPackage, native: Any, onnx_rt: Any, proto: Any, *, probes: int, seed: int
) -> ParityReport:
    sig = pkg.signature
    sample = pkg.sample()
    if sample is not None and sample.num_rows:
        base = to_matrix(sample, sig, np.float64)
    else:  # no sample stored: standard-normal rows still exercise the graph
        base = np.random.default_rng(seed).standard_normal((256, len(sig.inputs)))
    groups = {"sample": base, "split_probes": split_probes(base, tree_splits(proto), limit=probes, seed=seed)}
    if sig.task == "binary":
        groups["boundary_probes"] = boundary_probes(base, native, pkg.threshold)
        groups["float64_straddle"] = boundary_probes(base, native, pkg.threshold, limit=64, float32=False)
    float32_only = all(f.dtype == "float32" for f in sig.inputs)
    tolerance = 1e-4 if float32_only else 1e-5
    return compare(
        groups, native, onnx_rt, sig, pkg.threshold, tolerance=tolerance,
        informational=frozenset({"float64_straddle"}),
    )  # fmt: skip
