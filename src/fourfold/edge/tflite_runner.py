"""LiteRT (``ai-edge-litert``) behind the edge runner contract, for a ``.tflite`` with a dynamic batch.

Two interpreters, each with one thread and its tensors allocated once: one held at batch 1 for
``score_row`` (``set_tensor`` / ``invoke`` / ``get_tensor`` on the runner's own ``row`` buffer, nothing
resized or allocated per call), one for ``predict_raw``, fed blocks of at most ``BLOCK`` rows and
resized only when a block's number of rows differs from the last one's.
XNNPACK is LiteRT's default CPU delegate and applies to both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BLOCK", "TFLiteRunner"]

BLOCK = 4096  # rows per invoke in predict_raw: bounds the activations LiteRT allocates


def _interpreter(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


class TFLiteRunner:
    def __init__(self, directory: Path, spec: Mapping[str, Any], task: str) -> None:
        path = directory / str(spec["file"])
        self.task = task
        self._one = _interpreter(path)
        inp = self._one.get_input_details()[0]
        self._in = int(inp["index"])
        out = self._one.get_output_details()[0]
        self._out = int(out["index"])
        self._width = int(out["shape"][1])
        self.input_dtype: type[np.floating[Any]] = np.float32
        self.row = np.zeros((1, int(inp["shape"][1])), dtype=np.float32)
        self._many = _interpreter(path)
        self._many_rows = 1
        self._set, self._invoke, self._get = self._one.set_tensor, self._one.invoke, self._one.get_tensor

    def score_row(self) -> Any:
        self._set(self._in, self.row)
        self._invoke()
        y = self._get(self._out)
        if self.task == "multiclass":
            return np.asarray(y[0], dtype=np.float64)
        return float(y[0, 0])

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.empty((len(x), self._width), dtype=np.float64)
        for start in range(0, len(x), BLOCK):
            block = x[start : start + BLOCK]
            if len(block) != self._many_rows:
                self._many.resize_tensor_input(self._in, list(block.shape), strict=False)
                self._many.allocate_tensors()
                self._many_rows = len(block)
            self._many.set_tensor(self._in, block)
            self._many.invoke()
            y[start : start + len(block)] = self._many.get_tensor(self._out)
        return y if self.task == "multiclass" else y.reshape(len(x))
