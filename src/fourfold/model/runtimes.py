"""Runtimes: what actually computes a model's raw output. ``native`` is the model's own library; ``onnx``
is ONNX Runtime over the package's verified ONNX file.

    >>> # rt = OnnxRuntime(b"...onnx bytes...", task="binary"); rt.predict_raw(x)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fourfold.edge.onnx_runner import raw_form, session_options
from fourfold.extras import require
from fourfold.model.signature import Task

__all__ = ["OnnxRuntime", "onnx_raw_output"]


def onnx_raw_output(outputs: list[Any]) -> tuple[int, str]:
    """Which of an ONNX model's outputs carries the raw form: ``probabilities`` for classifiers
    converted with zipmap off, else the first float output."""
    for i, out in enumerate(outputs):
        if out.name == "probabilities":
            return i, out.name
    for i, out in enumerate(outputs):
        if out.type in ("tensor(float)", "tensor(double)"):
            return i, out.name
    raise ValueError("the ONNX model has no float output to read scores from")


class OnnxRuntime:
    """An ONNX Runtime session built once, CPU provider named explicitly, intra-op threads set on purpose
    (one thread is fastest for small models and leaves the cores to worker processes)."""

    def __init__(self, model: Path | bytes, *, task: Task, threads: int = 1) -> None:
        ort = require("onnxruntime", "onnx", "running a model with ONNX Runtime")
        opts = session_options(ort, threads)  # the edge runtime's: the same session a device builds
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        self.input_dtype: type[np.floating[Any]] = np.float64 if inp.type == "tensor(double)" else np.float32
        _, self.output_name = onnx_raw_output(self.session.get_outputs())
        self.task = task
        # the session's C++ run: the Python wrapper re-validates the feed's names and ownership on every
        # call, which the fixed input name and dtype make redundant here (a few us per online request)
        self._run = getattr(self.session, "_sess", self.session).run
        self._outputs = [self.output_name]

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        (y,) = self._run(self._outputs, {self.input_name: x}, None)
        return raw_form(y, self.task, len(x))
