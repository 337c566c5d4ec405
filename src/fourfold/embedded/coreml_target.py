"""The ``coreml`` export target: XGBoost and PyTorch packages as Core ML models, as far as Linux can check.

Core ML predicts only on macOS, so no file this target writes is run here: ``spec["runner"]`` is None
and ``info["unverified"]`` says what was not checked; the gate refuses such a bundle unless forced.

* **XGBoost** -> ``model.mlmodel`` (a tree ensemble) with ``coremltools.converters.xgboost``. That
  converter hard-codes the base prediction (0 for classifiers, 0.5 for regressors) and ignores the
  ``base_score`` XGBoost >= 2 fits - a silent shift of every margin. The base is replaced by the fitted
  margin (logit of ``base_score`` for ``binary:logistic``, the per-class intercepts of
  ``multi:softprob``, ``base_score`` itself for identity-link regression), then the written spec's
  ensemble is evaluated in NumPy (:mod:`~fourfold.embedded.coreml_trees`) against the native booster
  on the stored sample, split probes and rows with missing values: a disagreement beyond 1e-5 is a
  :class:`~fourfold.errors.ConversionError`, nothing is written. What stays unverified: Core ML's own
  evaluation of that spec (its float handling, how it reads a missing value).
* **PyTorch** -> ``model.mlpackage`` (an ML program, float32 compute) from ``torch.export`` of the
  module with fourfold's head, a dynamic batch of 1 to ``MAX_BATCH``: converted, never run.
* **scikit-learn**: refused - coremltools 9 disables its scikit-learn converter for scikit-learn > 1.5.1.
"""

from __future__ import annotations

import json
import os
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fourfold.embedded.coreml_trees import ensemble_of, evaluate, splits
from fourfold.embedded.noise import quiet
from fourfold.embedded.targets import Exported
from fourfold.errors import ConversionError, InvalidOptionError, UnsupportedModelError
from fourfold.extras import require
from fourfold.model.parity import split_probes

if TYPE_CHECKING:
    from fourfold.model.package import ModelPackage

__all__ = ["IDENTITY_OBJECTIVES", "MAX_BATCH", "TOLERANCE", "export", "fitted_base_margin"]

MAX_BATCH = 4096
TOLERANCE = 1e-5  # on probabilities / values, float64 arithmetic on float32-representable rows
IDENTITY_OBJECTIVES = ("reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror")
_EXTRA = "coreml"
_NOT_RUN = "Core ML predicts only on macOS; coremltools has no runtime on Linux, so the file was not run"


def export(
    pkg: ModelPackage, out: Path, *, opset: int | None = None, quantize: str | None = None
) -> Exported:
    """Write a Core ML model of ``pkg`` under ``out`` (``opset`` is ONNX's, not used here)."""
    if quantize is not None:
        raise InvalidOptionError(
            f"quantize={quantize!r} is not supported for --format coreml; leave it unset"
        )
    if pkg.flavor == "sklearn":
        raise UnsupportedModelError(
            f"{pkg.label}: coremltools {_version('coremltools')} disables its scikit-learn converter for "
            f"scikit-learn > 1.5.1 (installed: {_version('scikit-learn')}); --format coreml takes XGBoost "
            "and PyTorch models - use --format tflite for an MLP or --format onnx"
        )
    if pkg.flavor not in ("xgboost", "torch"):
        raise UnsupportedModelError(
            f"--format coreml takes XGBoost and PyTorch models; {pkg.label} is a {pkg.flavor} model"
        )
    if pkg.flavor == "xgboost":
        require("xgboost", "xgboost", "exporting an XGBoost model to Core ML")
        with quiet():
            ct = require("coremltools", _EXTRA, "exporting to Core ML")
        return _xgboost(pkg, out, ct)
    require("torch", "torch", "exporting a PyTorch model to Core ML")
    with quiet():
        ct = require("coremltools", _EXTRA, "exporting to Core ML")
    return _torch(pkg, out, ct)


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


# ---------------------------------------------------------------- XGBoost


def fitted_base_margin(config: dict[str, Any], n_classes: int) -> list[float]:
    """The margin XGBoost starts every row from, from a booster's ``save_config()``, per output."""
    learner = config["learner"]
    objective = learner["objective"]["name"]
    raw = str(learner["learner_model_param"]["base_score"]).strip("[]")
    base = [float(v) for v in raw.split(",") if v.strip()]
    if objective == "binary:logistic":
        (p,) = base
        return [float(np.log(p) - np.log1p(-p))]
    if objective == "multi:softprob":
        return base if len(base) == n_classes else base[:1] * n_classes
    if objective in IDENTITY_OBJECTIVES:
        (value,) = base
        return [value]
    raise UnsupportedModelError(
        f"XGBoost objective {objective!r} has no Core ML equivalent here; --format coreml takes "
        f"binary:logistic, multi:softprob and {', '.join(IDENTITY_OBJECTIVES)}"
    )


def _refuse_shape(config: dict[str, Any], label: str) -> None:
    learner = config["learner"]
    booster = learner["gradient_booster"]
    if booster.get("name") != "gbtree":
        raise UnsupportedModelError(
            f"{label}: Core ML's tree ensemble holds gbtree boosters; this one is {booster.get('name')!r}"
        )
    params = booster.get("gbtree_model_param", {})
    if (
        int(params.get("num_parallel_tree", 1)) != 1
        or int(learner["learner_model_param"].get("num_target", 1)) != 1
    ):
        raise UnsupportedModelError(
            f"{label}: coremltools maps XGBoost trees to outputs assuming one tree per class and round "
            "(num_parallel_tree = 1, num_target = 1)"
        )


def _xgboost(pkg: ModelPackage, out: Path, ct: Any) -> Exported:
    native = pkg.load_native()
    booster = native.booster  # type: ignore[attr-defined]
    config = json.loads(booster.save_config())
    _refuse_shape(config, pkg.label)
    task = pkg.signature.task
    classes = list(pkg.signature.classes or ())
    fitted = fitted_base_margin(config, len(classes))
    names = list(pkg.signature.feature_names)
    mode = "regressor" if task == "regression" else "classifier"
    kwargs: dict[str, Any] = (
        {} if mode == "regressor" else {"n_classes": len(classes), "class_labels": classes}
    )
    try:
        with quiet():
            mlmodel = ct.converters.xgboost.convert(
                booster.copy(), feature_names=names, mode=mode, force_32bit_float=True, **kwargs
            )
    except Exception as exc:
        raise ConversionError(f"coremltools could not convert {pkg.label}: {exc}") from exc
    spec = mlmodel.get_spec()
    ensemble, _, _ = ensemble_of(spec)
    written = [float(v) for v in ensemble.basePredictionValue]
    del ensemble.basePredictionValue[:]
    ensemble.basePredictionValue.extend(fitted)
    x = _check_rows(pkg, spec)
    ours = _raw(evaluate(spec, x), task)
    diff = np.abs(ours - native.predict_raw(x)).reshape(len(x), -1).max(axis=1)
    if not diff.max() <= TOLERANCE:
        raise ConversionError(
            f"{pkg.label}: the Core ML tree ensemble, with the fitted base margin {fitted}, still differs "
            f"from XGBoost by up to {diff.max():.3g} (tolerance {TOLERANCE:g}) over {len(x)} rows; "
            "nothing was written"
        )
    ct.utils.save_spec(spec, str(out / "model.mlmodel"))
    spec_entry = {
        "format": "coreml",
        "file": "model.mlmodel",
        "input_dtype": "float64",
        "runner": None,
        "inputs": names,  # one double feature per input, by name
        "output": spec.description.predictedProbabilitiesName or spec.description.output[0].name,
    }
    info = {
        "converter": "coremltools.converters.xgboost",
        "converter_version": _version("coremltools"),
        "base_margin": {"converter_wrote": written, "fitted": fitted, "corrected": written != fitted},
        "spec_parity": {"rows": len(x), "max_abs_diff": float(diff.max()), "tolerance": TOLERANCE},
        "unverified": (
            f"{_NOT_RUN}. The written spec's tree ensemble was evaluated in NumPy against XGBoost "
            f"(max |diff| {diff.max():.3g} over {len(x)} rows); Core ML's own evaluation of it was not"
        ),
    }
    return Exported(spec_entry, ("model.mlmodel",), info)


def _raw(y: np.ndarray, task: str) -> np.ndarray:
    """Core ML's output as fourfold's raw form: the binary classifier's one dimension is P(second class)."""
    return y if task == "multiclass" else y.reshape(len(y))


def _check_rows(pkg: ModelPackage, spec: Any) -> np.ndarray:
    """float32-representable rows: the sample, one feature on each side of split thresholds, a few rows
    with a missing value in every feature."""
    rng = np.random.default_rng(0)
    names = pkg.signature.feature_names
    sample = pkg.sample()
    if sample is not None and sample.num_rows:
        base = np.column_stack([np.asarray(sample[n], dtype=np.float64) for n in names])
    else:
        base = rng.standard_normal((64, len(names)))
    base = base.astype(np.float32).astype(np.float64)
    probes = split_probes(base, splits(spec), limit=600)
    missing = base[rng.integers(0, len(base), size=len(names) * 4)].copy()
    missing[np.arange(len(missing)), np.arange(len(missing)) % len(names)] = np.nan
    return np.concatenate([base, probes, missing])


# ---------------------------------------------------------------- PyTorch


def _torch(pkg: ModelPackage, out: Path, ct: Any) -> Exported:
    import torch

    head = pkg.load_native().head  # type: ignore[attr-defined]
    n_features = len(pkg.signature.inputs)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    package = out / "model.mlpackage"
    try:
        with quiet():
            program = torch.export.export(
                head, (torch.zeros(2, n_features, dtype=torch.float32),), dynamic_shapes=({0: batch},)
            ).run_decompositions({})
            # coremltools drops the TemporaryDirectory its weights went through without cleanup():
            # a ResourceWarning when ct.convert returns; the directory is removed all the same.
            warnings.simplefilter("ignore", ResourceWarning)
            mlmodel = ct.convert(
                program,
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT32,
                skip_model_load=True,
                package_dir=str(package),
            )
    except Exception as exc:
        raise ConversionError(f"coremltools could not convert {pkg.label}: {exc}") from exc
    description = mlmodel.get_spec().description
    files = tuple(
        sorted(
            Path(root, f).relative_to(out).as_posix() for root, _, names in os.walk(package) for f in names
        )
    )
    spec_entry = {
        "format": "coreml",
        "file": "model.mlpackage",
        "input_dtype": "float32",
        "runner": None,
        "input": description.input[0].name,
        "output": description.output[0].name,
        "max_batch": MAX_BATCH,
    }
    info = {
        "converter": "torch.export + coremltools.convert (mlprogram, float32)",
        "converter_version": _version("coremltools"),
        "torch": str(torch.__version__),
        "unverified": f"{_NOT_RUN}: the ML program's outputs were not compared with PyTorch's",
    }
    return Exported(spec_entry, files, info)
