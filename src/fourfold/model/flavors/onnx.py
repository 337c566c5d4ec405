"""Models that already are ONNX (a ``ModelProto`` or an ``.onnx`` file): the native runtime is ONNX
Runtime. The model takes one ``[rows, features]`` float input; say the task with ``task=``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fourfold.model.flavors.base import SavedModel, require
from fourfold.model.runtimes import OnnxRuntime


class OnnxFlavor:
    name = "onnx"

    def matches(self, model: Any) -> bool:
        if isinstance(model, Path | str) and str(model).endswith(".onnx"):
            return True
        return type(model).__module__.startswith("onnx") and type(model).__name__ == "ModelProto"

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> SavedModel:
        onnx = require("onnx", "onnx", "saving an ONNX model")
        target = directory / "model.onnx"
        if isinstance(model, Path | str):
            shutil.copyfile(model, target)
        else:
            onnx.save(model, target)
        proto = onnx.load(target)
        onnx.checker.check_model(proto)
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        n_features = dims[1].dim_value if len(dims) == 2 and dims[1].dim_value else None
        task = options.get("task", "binary")
        classes = tuple(options.get("classes", (0, 1) if task == "binary" else ()))
        return SavedModel(
            ["model.onnx"], task, classes, n_features, {"onnx": onnx.__version__}, {"task": task}
        )

    def load(self, directory: Path, options: dict[str, Any], *, trusted: bool) -> OnnxRuntime:
        return OnnxRuntime(directory / "model.onnx", task=options.get("task", "binary"))

    def to_onnx(
        self, directory: Path, options: dict[str, Any], n_features: int, *, trusted: bool
    ) -> tuple[Any, dict[str, str]]:
        onnx = require("onnx", "onnx", "reading an ONNX model")
        return onnx.load(directory / "model.onnx"), {
            "converter": "none",
            "converter_version": onnx.__version__,
        }
