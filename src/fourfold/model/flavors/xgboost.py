"""XGBoost boosters and their scikit-learn wrappers, saved in XGBoost's native UBJ (or JSON) format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fourfold.errors import UnsupportedModelError
from fourfold.model.flavors.base import SavedModel, require
from fourfold.model.signature import Task

_EXTRA = "xgboost"


def _task(objective: str) -> Task:
    if objective == "binary:logistic":
        return "binary"
    if objective == "multi:softprob":
        return "multiclass"
    if objective.startswith(("reg:", "count:")) or objective in ("survival:cox",):
        return "regression"
    raise UnsupportedModelError(
        f"XGBoost objective {objective!r} is not supported; use binary:logistic, multi:softprob or reg:*"
    )


class XGBoostModel:
    input_dtype: type[np.floating[Any]] = np.float64

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(x), dtype=np.float64)

    def set_threads(self, n: int) -> None:
        """OpenMP threads per predict call (0: all cores). In-place prediction is thread-safe."""
        self.booster.set_param({"nthread": n})


class XGBoostFlavor:
    name = "xgboost"

    def matches(self, model: Any) -> bool:
        return type(model).__module__.startswith("xgboost")

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> SavedModel:
        xgb = require("xgboost", _EXTRA, "saving an XGBoost model")
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        config = json.loads(booster.save_config())
        task = _task(config["learner"]["objective"]["name"])
        fmt = options.get("format", "ubj")
        if fmt not in ("ubj", "json"):
            raise ValueError(f"XGBoost format must be 'ubj' or 'json', got {fmt!r}")
        filename = f"model.{fmt}"
        booster.save_model(directory / filename)
        classes = tuple(np.asarray(model.classes_).tolist()) if hasattr(model, "classes_") else ()
        if not classes and task == "binary":
            classes = (0, 1)
        names = list(booster.feature_names or [])
        return SavedModel(
            [filename], task, classes, booster.num_features(), {"xgboost": xgb.__version__},
            {"file": filename, "feature_names": names},
        )  # fmt: skip

    def _booster(self, directory: Path, options: dict[str, Any]) -> Any:
        xgb = require("xgboost", _EXTRA, "loading an XGBoost model")
        booster = xgb.Booster(model_file=str(directory / options.get("file", "model.ubj")))
        booster.feature_names = None  # columns are matched by the signature, not by XGBoost
        return booster

    def load(self, directory: Path, options: dict[str, Any], *, trusted: bool) -> XGBoostModel:
        return XGBoostModel(self._booster(directory, options))

    def to_onnx(
        self, directory: Path, options: dict[str, Any], n_features: int, *, trusted: bool
    ) -> tuple[Any, dict[str, str]]:
        onnxmltools = require("onnxmltools", "onnx", "converting an XGBoost model to ONNX")
        from onnxmltools.convert.common.data_types import FloatTensorType

        onx = onnxmltools.convert_xgboost(
            self._booster(directory, options),
            initial_types=[("input", FloatTensorType([None, n_features]))],
            target_opset=15,
        )
        return onx, {"converter": "onnxmltools", "converter_version": onnxmltools.__version__}
