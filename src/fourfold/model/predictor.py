"""The predictor: the one object every pattern calls - ``check`` a batch, ``score`` the good rows.

>>> # p = load_predictor("models:/fraud/production")
>>> # p.predict(arrow_table)["score"]      # columnar batch -> arrays (raises on a bad row)
>>> # p.predict_one({"amount": 310.5, ...}) # one row, the low-latency path
>>> # checked = p.check(batch)             # the patterns' path: good rows' matrix + a reason per bad row
>>> # out = p.score(checked.x)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np

from fourfold.errors import ConflictError, InvalidOptionError
from fourfold.model.check import RowCheck
from fourfold.model.checked import Checked
from fourfold.model.outputs import finish, finish_one
from fourfold.model.package import ModelPackage
from fourfold.model.signature import Signature

__all__ = ["Predictor", "RuntimeName"]

_log = logging.getLogger(__name__)

RuntimeName = Literal["auto", "native", "onnx", "c"]


class _Runtime(Protocol):
    input_dtype: type[np.floating[Any]]

    def predict_raw(self, x: np.ndarray) -> np.ndarray: ...


class Predictor:
    """Scores columnar batches or single rows with a package's model, validated against its signature.

    ``runtime="auto"`` takes the runtime ``fourfold compile`` chose for the package (measured, recorded in
    its manifest: the same one in every pattern), else ONNX Runtime when the package holds an ONNX file
    that passed parity, else the native library; a chosen C library that cannot be loaded here (built
    for another platform) falls back to the next verified runtime, as measured. ``runtime="c"`` asks
    for the compiled tree library (``fourfold compile --c``). ``strict=True`` refuses unknown features.
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
        self.rules = RowCheck(self.signature, self._dtype, strict=strict, model=self._label)

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

    def check(self, batch: Any, required: Sequence[str] = ()) -> Checked:
        """Check a batch against the signature: the good rows' matrix (``.x``, the runtime's dtype), which
        rows are good (``.ok``) and a reason for each bad one (``.reason(i)``) - the one check every
        pattern runs (:mod:`fourfold.model.check`). ``required``: other columns that must be non-null
        (ids, an entity key). A batch that cannot be read at all (a missing or non-numeric column) raises.

        >>> # c = p.check(table, required=["user_id"]); out = p.score(c.x)"""
        return self.rules.check(batch, required)

    def check_one(self, row: Mapping[str, Any]) -> np.ndarray:
        """:meth:`check` for one mapping, the low-latency path: its ``[1, features]`` matrix, or the
        :class:`~fourfold.InputError` naming the feature."""
        x: np.ndarray = self.rules.one(row)
        return x

    def predict(self, batch: Any) -> dict[str, np.ndarray]:
        """Score a batch: Arrow table / record batch, pandas DataFrame, dict of arrays, a list of row
        mappings, or a 2-D array; any bad row raises its :class:`~fourfold.InputError`."""
        checked = self.check(batch)
        err = checked.error()
        if err is not None:
            raise err
        return self.score(checked.x)

    def score(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Score a checked matrix (``check(...).x``): the patterns' hot path."""
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
        return finish_one(self._task, self._rt.predict_raw(self.rules.one(row)), self.threshold)

    def __repr__(self) -> str:
        return f"<Predictor {self._label} runtime={self.runtime}>"


def _pick_runtime(
    package: ModelPackage, wanted: RuntimeName, *, trusted: bool, threads: int
) -> tuple[str, _Runtime]:
    if wanted not in ("auto", "native", "onnx", "c"):
        raise InvalidOptionError(f"runtime must be 'auto', 'native', 'onnx' or 'c', got {wanted!r}")
    if wanted != "auto":
        return _load_runtime(package, wanted, trusted=trusted, threads=threads)
    order = package.serving_order()
    for name in order[:-1]:
        try:
            return _load_runtime(package, name, trusted=trusted, threads=threads)
        except ConflictError as exc:  # a C library built for another platform, or one the loader refuses
            _log.warning(
                "%s: runtime %r cannot be used here (%s); trying the next one", package.label, name, exc
            )
    return _load_runtime(package, order[-1], trusted=trusted, threads=threads)


def _load_runtime(package: ModelPackage, name: str, *, trusted: bool, threads: int) -> tuple[str, _Runtime]:
    if name == "c":
        c_info = package.runtimes.get("c")
        if not c_info:
            raise ConflictError(f"{package.label} has no C runtime; run `fourfold compile --c` on it first")
        from fourfold.edge.c_runner import CRunner

        try:
            return "c", CRunner(package.path / c_info["dir"], c_info["spec"], package.signature.task)
        except OSError as exc:  # ForeignLibraryError, or a library the dynamic loader refuses
            raise ConflictError(f"{package.label}: its C runtime cannot be loaded here: {exc}") from exc
    if name == "onnx" and package.flavor != "onnx":
        onnx_info = package.runtimes.get("onnx")
        if not onnx_info:
            raise ConflictError(f"{package.label} has no ONNX runtime; run `fourfold compile` on it first")
        from fourfold.model.runtimes import OnnxRuntime

        return "onnx", OnnxRuntime(
            package.path / onnx_info["file"], task=package.signature.task, threads=threads
        )
    return ("onnx" if package.flavor == "onnx" else "native"), package.load_native(trusted=trusted)
