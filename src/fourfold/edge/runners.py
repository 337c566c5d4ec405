"""The runner contract of the edge runtime: one small class per model format, loaded by name.

A runner is built as ``Runner(directory, spec, task)`` - the bundle's directory, the manifest's ``model``
entry (``{"format": "c", "file": "model.so", "input_dtype": "float32", ...}``) and the task - and offers:

* ``input_dtype``: the NumPy dtype its input matrix has (float32 or float64);
* ``row``: a ``(1, features)`` buffer of that dtype it owns: the caller writes a checked row into it;
* ``score_row()``: the raw output for ``row`` - a float (binary: the positive class's probability;
  regression: the value) or a 1-D array of class probabilities (multiclass); no per-call allocation
  where the format allows it;
* ``predict_raw(x)``: the raw output for a ``[rows, features]`` matrix - ``[rows]`` (binary,
  regression) or ``[rows, classes]`` (multiclass), float64: the same raw form as the core's runtimes.

This package imports nothing of fourfold (only the standard library and NumPy; a format's own runtime
library is imported when a bundle of that format is loaded), so a client application can vendor it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["RUNNERS", "Runner", "load_runner"]

#: format name -> "module:Class" inside this package, imported only when that format is loaded
RUNNERS: dict[str, str] = {
    "onnx": "onnx_runner:OnnxRunner",
    "c": "c_runner:CRunner",
    "tflite": "tflite_runner:TFLiteRunner",
    "executorch": "pte_runner:PteRunner",
}


class Runner(Protocol):
    input_dtype: type[np.floating[Any]]
    row: np.ndarray

    def score_row(self) -> Any: ...

    def predict_raw(self, x: np.ndarray) -> np.ndarray: ...


def load_runner(directory: Path, spec: Mapping[str, Any], task: str) -> Runner:
    """The runner for a bundle's model entry (``spec["format"]``)."""
    fmt = str(spec.get("format"))
    target = RUNNERS.get(fmt)
    if target is None:
        raise ValueError(f"no edge runner for model format {fmt!r}; known: {', '.join(RUNNERS)}")
    module_name, cls_name = target.split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    runner: Runner = getattr(module, cls_name)(Path(directory), spec, task)
    return runner
