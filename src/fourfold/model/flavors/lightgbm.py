"""LightGBM boosters and their scikit-learn wrappers, saved in LightGBM's native text format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fourfold.errors import UnsupportedModelError
from fourfold.model.flavors.base import SavedModel, require
from fourfold.model.signature import Task

_EXTRA = "lightgbm"


def _task(objective: str) -> Task:
    name = objective.split()[0]
    if name in ("binary", "cross_entropy", "xentropy"):
        return "binary"
    if name in ("multiclass", "softmax", "multiclassova"):
        return "multiclass"
    if name in ("lambdarank", "rank_xendcg"):
        raise UnsupportedModelError(f"LightGBM ranking objective {name!r} is not supported")
    return "regression"


class LightGBMModel:
    input_dtype: type[np.floating[Any]] = np.float64

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        self._threads: dict[str, int] = {}

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, validate_features=False, **self._threads), dtype=np.float64)

    def set_threads(self, n: int) -> None:
        """OpenMP threads per predict call (0: LightGBM's default)."""
        self._threads = {"num_threads": n} if n > 0 else {}


class LightGBMFlavor:
    name = "lightgbm"

    def matches(self, model: Any) -> bool:
        return type(model).__module__.startswith("lightgbm")

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> SavedModel:
        lgb = require("lightgbm", _EXTRA, "saving a LightGBM model")
        booster = model.booster_ if hasattr(model, "booster_") else model
        booster.save_model(str(directory / "model.txt"))
        objective = str(booster.dump_model(num_iteration=0)["objective"])
        task = _task(objective)
        classes = tuple(np.asarray(model.classes_).tolist()) if hasattr(model, "classes_") else ()
        if not classes and task == "binary":
            classes = (0, 1)
        names = list(booster.feature_name())
        return SavedModel(
            ["model.txt"], task, classes, booster.num_feature(), {"lightgbm": lgb.__version__},
            {"feature_names": names},
        )  # fmt: skip

    def _booster(self, directory: Path) -> Any:
        lgb = require("lightgbm", _EXTRA, "loading a LightGBM model")
        return lgb.Booster(model_file=str(directory / "model.txt"))

    def load(self, directory: Path, options: dict[str, Any], *, trusted: bool) -> LightGBMModel:
        return LightGBMModel(self._booster(directory))

    def to_onnx(
        self, directory: Path, options: dict[str, Any], n_features: int, *, trusted: bool
    ) -> tuple[Any, dict[str, str]]:
        onnxmltools = require("onnxmltools", "onnx", "converting a LightGBM model to ONNX")
        from onnxmltools.convert.common.data_types import FloatTensorType

        booster = self._booster(directory)
        onx = onnxmltools.convert_lightgbm(
            booster,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            zipmap=False,
            target_opset=15,
        )
        round_thresholds_down(onx, booster)
        return onx, {"converter": "onnxmltools", "converter_version": onnxmltools.__version__}


def _thresholds(node: dict[str, Any], out: dict[int, set[float]]) -> None:
    if "split_feature" in node:
        if node.get("decision_type", "<=") == "<=":
            out.setdefault(int(node["split_feature"]), set()).add(float(node["threshold"]))
        _thresholds(node["left_child"], out)
        _thresholds(node["right_child"], out)


def round_thresholds_down(onx: Any, booster: Any) -> int:
    """Make the ONNX splits agree with LightGBM for every float32 input.

    LightGBM compares ``x <= t`` with a float64 ``t``; the converter stores ``float32(t)`` rounded to
    nearest, so when that rounds *up*, an input equal to it goes left in ONNX and right in LightGBM. The
    largest float32 not above ``t`` gives the same answer as ``t`` for every float32 ``x``. Returns the
    number of thresholds moved."""
    from onnx import helper

    by_feature: dict[int, set[float]] = {}
    for tree in booster.dump_model()["tree_info"]:
        _thresholds(tree["tree_structure"], by_feature)
    fixes: dict[tuple[int, float], float] = {}
    for feat, values in by_feature.items():
        doubles = np.fromiter(values, dtype=np.float64)
        nearest = doubles.astype(np.float32)
        for v32 in np.unique(nearest):
            group = doubles[nearest == v32]
            if np.all(group < np.float64(v32)):
                fixes[(feat, float(v32))] = float(np.nextafter(v32, np.float32(-np.inf)))
    moved = 0
    for node in onx.graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        attrs = {a.name: a for a in node.attribute}
        if "nodes_values" not in attrs:
            continue
        feats = helper.get_attribute_value(attrs["nodes_featureids"])
        modes = helper.get_attribute_value(attrs["nodes_modes"])
        values = attrs["nodes_values"].floats
        for i, (f, m) in enumerate(zip(feats, modes, strict=True)):
            new = fixes.get((int(f), float(np.float32(values[i])))) if m == b"BRANCH_LEQ" else None
            if new is not None:
                values[i] = new
                moved += 1
    return moved
