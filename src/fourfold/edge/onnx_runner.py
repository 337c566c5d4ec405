"""ONNX Runtime behind the edge runner contract, with the session options tuned for one row: one
intra-op and one inter-op thread, sequential execution, every graph optimization, the CPU provider named
explicitly (or the providers the manifest's ``providers`` lists).

The one-row call goes to the session's C++ ``run`` with the output name list and the input dict built
once: the Python wrapper re-validates names and ownership on every call, which a fixed input makes
redundant (a few microseconds a row)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OnnxRunner", "raw_form", "session_options"]


def session_options(ort: Any, threads: int = 1) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def _raw_output(outputs: list[Any]) -> str:
    for out in outputs:
        if out.name == "probabilities":
            return str(out.name)
    for out in outputs:
        if out.type in ("tensor(float)", "tensor(double)"):
            return str(out.name)
    raise ValueError("the ONNX model has no float output to read scores from")


class OnnxRunner:
    def __init__(self, directory: Path, spec: Mapping[str, Any], task: str) -> None:
        import onnxruntime as ort

        providers = list(spec.get("providers") or ["CPUExecutionProvider"])
        self.session = ort.InferenceSession(
            str(directory / str(spec["file"])), sess_options=session_options(ort), providers=providers
        )
        inp = self.session.get_inputs()[0]
        self.input_dtype: type[np.floating[Any]] = np.float64 if inp.type == "tensor(double)" else np.float32
        self.task = task
        self.output_name = _raw_output(self.session.get_outputs())
        n = len(spec.get("feature_order") or []) or int(inp.shape[1])
        self.row = np.zeros((1, n), dtype=self.input_dtype)
        self._run = getattr(self.session, "_sess", self.session).run
        self._outputs = [self.output_name]
        self._feed = {inp.name: self.row}
        self._input_name = inp.name
        self._pick = 1 if task == "binary" else 0

    def score_row(self) -> Any:
        (y,) = self._run(self._outputs, self._feed, None)
        if self.task == "multiclass":
            return np.asarray(y[0], dtype=np.float64)
        flat = y.reshape(-1)
        return float(flat[self._pick] if len(flat) == 2 and self.task == "binary" else flat[0])

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        (y,) = self._run(self._outputs, {self._input_name: np.ascontiguousarray(x)}, None)
        return raw_form(y, self.task, len(x))


def raw_form(y: Any, task: str, rows: int) -> np.ndarray:
    """An ONNX model's output as the raw form every runtime returns: class probabilities (multiclass),
    the positive class's probability (binary), the value (regression) - float64."""
    out = np.asarray(y, dtype=np.float64)
    if task == "multiclass":
        return out
    if out.ndim == 2 and out.shape[1] == 2 and task == "binary":
        return out[:, 1]
    return out.reshape(rows)
