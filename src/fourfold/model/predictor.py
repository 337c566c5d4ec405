"""The predictor: the one object every pattern calls.

>>> # p = load_predictor("models:/fraud/production")
>>> # p.predict(arrow_table)["score"]      # columnar batch -> arrays
>>> # p.predict_one({"amount": 310.5, ...}) # one row, the low-latency path
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import numpy as np

from fourfold.errors import ConflictError, FourfoldError
from fourfold.model.inputs import row_to_matrix, to_matrix
from fourfold.model.outputs import finish, finish_one
from fourfold.model.package import ModelPackage
from fourfold.model.signature import Signature

__all__ = ["Predictor", "RuntimeName"]

RuntimeName = Literal["auto", "native", "onnx"]


class _Runtime(Protocol):
    input_dtype: type[np.floating[Any]]

    def predict_raw(self, x: np.ndarray) -> np.ndarray: ...


class Predictor:
    """Scores columnar batches or single rows with a package's model, validated against its signature.

    ``runtime="auto"`` takes ONNX Runtime when the package holds an ONNX file that passed parity and
    ``onnxruntime`` is installed, else the native library. ``strict=True`` refuses unknown features.
    """

    def __init__(
        self,
        package: ModelPackage,
        *,
        runtime: RuntimeName = "auto",
        strict: bool = False,
        trusted: bool = False,
        threads: int = 1,
    ) -> None:
        self.package = package
        self.signature: Signature = package.signature
        self.strict = strict
        self.threshold = package.threshold
        self.runtime, self._rt = _pick_runtime(package, runtime, trusted=trusted, threads=threads)
        self._dtype = self._rt.input_dtype
        self._label = package.label
        self._task = self.signature.task

    @property
    def name(self) -> str:
        return self.package.name

    @property
    def version(self) -> str | None:
        return self.package.version

    @property
    def input_dtype(self) -> type[np.floating[Any]]:
        """The dtype the runtime takes its matrix in (float32 for ONNX, float64 for most native models)."""
        return self._dtype

    def matrix(self, batch: Any) -> np.ndarray:
        """A batch validated against the signature, as the runtime's input matrix (errors name the feature).

        Patterns that queue, cache or batch rows build the matrix here and score it with
        :meth:`predict_matrix` - the same validation :meth:`predict` does."""
        return to_matrix(batch, self.signature, self._dtype, strict=self.strict, model=self._label)

    def row_matrix(self, row: Mapping[str, Any]) -> np.ndarray:
        """:meth:`matrix` for one row given as a mapping (the low-latency path)."""
        return row_to_matrix(row, self.signature, self._dtype, strict=self.strict, model=self._label)

    def predict(self, batch: Any) -> dict[str, np.ndarray]:
        """Score a batch: Arrow table / record batch, pandas DataFrame, dict of arrays, or 2-D array."""
        return self.predict_matrix(self.matrix(batch))

    def predict_matrix(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Score a matrix already validated and in the signature's order (the patterns' hot path)."""
        if len(x) == 0:
            return finish(
                self._task, np.empty((0,) if self._task != "multiclass" else (0, 0)), self.threshold
            )
        return finish(self._task, self._rt.predict_raw(x), self.threshold)

    def set_threads(self, n: int) -> bool:
        """Limit the native runtime's threads per call (for callers that run several calls at once, one
        per core); False when the runtime has no such knob (ONNX Runtime's is fixed at ``threads=``)."""
        knob = getattr(self._rt, "set_threads", None)
        if knob is None:
            return False
        knob(n)
        return True

    def predict_one(self, row: Mapping[str, Any]) -> dict[str, object]:
        """Score one row given as a mapping of feature name to number; returns Python scalars."""
        return finish_one(self._task, self._rt.predict_raw(self.row_matrix(row)), self.threshold)

    def __repr__(self) -> str:
        return f"<Predictor {self._label} runtime={self.runtime}>"


def _pick_runtime(
    package: ModelPackage, wanted: RuntimeName, *, trusted: bool, threads: int
) -> tuple[str, _Runtime]:
    onnx_info = package.runtimes.get("onnx")
    if wanted not in ("auto", "native", "onnx"):
        raise ValueError(f"runtime must be 'auto', 'native' or 'onnx', got {wanted!r}")
    if wanted == "onnx" or (wanted == "auto" and onnx_info and onnx_info.get("verified")):
        if not onnx_info:
            raise ConflictError(
                f"{package.label} has no ONNX runtime; run `fourfold compile` on it first",
            )
        from fourfold.model.runtimes import OnnxRuntime

        try:
            return "onnx", OnnxRuntime(
                package.path / onnx_info["file"], task=package.signature.task, threads=threads
            )
        except FourfoldError:
            if wanted == "onnx":
                raise
    if package.flavor == "onnx":
        return "onnx", package.load_native(trusted=trusted)
    return "native", package.load_native(trusted=trusted)
