"""scikit-learn estimators and Pipelines, persisted with skops (no pickle of untrusted code).

skops records the types a file would instantiate; loading refuses any type not trusted. At save time the
types from scikit-learn, NumPy and SciPy are trusted automatically; anything else (your own transformer
class) must be named in ``trusted_types`` by the person saving, and is recorded in the manifest.
``serializer="pickle"`` writes joblib instead, which loads only with an explicit ``trusted=True``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fourfold.errors import UnsupportedModelError, UntrustedModelError
from fourfold.model.flavors.base import SavedModel, require
from fourfold.model.signature import Task

_AUTO_TRUSTED_ROOTS = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class SklearnModel:
    input_dtype: type[np.floating[Any]] = np.float64

    def __init__(self, model: Any, task: Task) -> None:
        self.model = model
        self.task = task
        # Estimators fitted on a DataFrame warn on every NumPy call; the signature already fixed the order.
        self._quiet = _has_feature_names(model)

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        if self._quiet:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
                return self._predict(x)
        return self._predict(x)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            return np.asarray(self.model.predict_proba(x)[:, 1], dtype=np.float64)
        if self.task == "multiclass":
            return np.asarray(self.model.predict_proba(x), dtype=np.float64)
        return np.asarray(self.model.predict(x), dtype=np.float64).reshape(len(x))


def _has_feature_names(model: Any) -> bool:
    if hasattr(model, "feature_names_in_"):
        return True
    steps = getattr(model, "steps", None) or []
    return any(hasattr(s, "feature_names_in_") for _, s in steps)


def _task_of(model: Any) -> tuple[Task, tuple[Any, ...]]:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(model):
        classes = tuple(np.asarray(model.classes_).tolist())
        return ("binary" if len(classes) == 2 else "multiclass"), classes
    if is_regressor(model):
        return "regression", ()
    raise UnsupportedModelError(f"{type(model).__name__} is neither a classifier nor a regressor")


class SklearnFlavor:
    name = "sklearn"

    def matches(self, model: Any) -> bool:
        mod = type(model).__module__
        if mod.startswith(("xgboost", "lightgbm")):
            return False
        try:
            from sklearn.base import BaseEstimator
        except ImportError:  # pragma: no cover - scikit-learn is a core dependency
            return False
        return isinstance(model, BaseEstimator)

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> SavedModel:
        import sklearn

        task, classes = _task_of(model)
        n_features = getattr(model, "n_features_in_", None)
        serializer = options.get("serializer", "skops")
        versions = {"scikit-learn": sklearn.__version__}
        if serializer == "pickle":
            import joblib

            joblib.dump(model, directory / "model.joblib")
            return SavedModel(["model.joblib"], task, classes, n_features, versions, {"serializer": "pickle"})
        if serializer != "skops":
            raise ValueError(f"serializer must be 'skops' or 'pickle', got {serializer!r}")
        sio = require("skops.io", "sklearn", "saving a scikit-learn model")
        path = directory / "model.skops"
        sio.dump(model, path)
        untrusted = sorted(sio.get_untrusted_types(file=path))
        extra = set(options.get("trusted_types", ()))
        refused = [t for t in untrusted if not t.startswith(_AUTO_TRUSTED_ROOTS) and t not in extra]
        if refused:
            path.unlink()
            raise UntrustedModelError(
                f"the model contains type(s) that skops would not load without trusting them: "
                f"{', '.join(refused)}; pass trusted_types=[...] naming them if you trust that code, "
                "or serializer='pickle' (then loading needs trusted=True)"
            )
        versions["skops"] = require("skops", "sklearn", "saving").__version__
        return SavedModel(
            ["model.skops"], task, classes, n_features, versions,
            {"serializer": "skops", "trusted_types": untrusted},
        )  # fmt: skip

    def _load_estimator(self, directory: Path, options: dict[str, Any], *, trusted: bool) -> Any:
        if options.get("serializer") == "pickle":
            if not trusted:
                raise UntrustedModelError(
                    "this package stores a pickle (joblib) file, which can run arbitrary code when loaded; "
                    "load it with trusted=True (CLI: --trusted) only if you trust its origin"
                )
            import joblib

            return joblib.load(directory / "model.joblib")
        sio = require("skops.io", "sklearn", "loading a scikit-learn model")
        path = directory / "model.skops"
        allowed = list(options.get("trusted_types", ()))
        try:
            return sio.load(path, trusted=sio.get_untrusted_types(file=path) if trusted else allowed)
        except Exception as exc:
            if type(exc).__name__ == "UntrustedTypesFoundException":
                raise UntrustedModelError(
                    f"skops refused to load types not recorded as trusted when the package was saved: {exc}"
                ) from None
            raise

    def load(self, directory: Path, options: dict[str, Any], *, trusted: bool) -> SklearnModel:
        model = self._load_estimator(directory, options, trusted=trusted)
        task, _ = _task_of(model)
        return SklearnModel(model, task)

    def to_onnx(
        self, directory: Path, options: dict[str, Any], n_features: int, *, trusted: bool
    ) -> tuple[Any, dict[str, str]]:
        skl2onnx = require("skl2onnx", "onnx", "converting a scikit-learn model to ONNX")
        from skl2onnx.common.data_types import FloatTensorType

        model = self._load_estimator(directory, options, trusted=trusted)
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        from sklearn.base import is_classifier

        conv_options = {id(final): {"zipmap": False}} if is_classifier(final) else None
        onx = skl2onnx.convert_sklearn(
            model,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            options=conv_options,
        )
        return onx, {"converter": "skl2onnx", "converter_version": skl2onnx.__version__}
