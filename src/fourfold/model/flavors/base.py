"""The flavor contract: how one kind of model is saved, loaded, scored and converted to ONNX.

A flavor turns a framework's model into a :class:`NativeModel` whose ``predict_raw`` returns, for a
``[rows, features]`` matrix: the positive class's probability ``[rows]`` (binary), the class
probabilities ``[rows, classes]`` (multiclass) or the value ``[rows]`` (regression). Every runtime
(native or ONNX) returns the same raw form, and :mod:`fourfold.model.outputs` turns it into outputs, so
all patterns share one post-processing step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fourfold.extras import require
from fourfold.model.signature import Task

__all__ = ["Flavor", "NativeModel", "SavedModel", "require"]


class NativeModel(Protocol):
    """A loaded model in its own library."""

    #: the dtype the model wants its input matrix in
    input_dtype: type[np.floating[Any]]

    def predict_raw(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class SavedModel:
    """What a flavor's ``save`` reports back for the manifest."""

    files: list[str]
    task: Task
    classes: tuple[Any, ...] = ()
    n_features: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


class Flavor(Protocol):
    name: str

    def matches(self, model: Any) -> bool: ...

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> SavedModel: ...

    def load(self, directory: Path, options: dict[str, Any], *, trusted: bool) -> NativeModel: ...

    def to_onnx(
        self, directory: Path, options: dict[str, Any], n_features: int, *, trusted: bool
    ) -> tuple[Any, dict[str, str]]:
        """An ``onnx.ModelProto`` taking one float ``input`` of ``[None, n_features]``, whose outputs
        give the raw form (see :func:`fourfold.model.runtimes.onnx_raw`), and the converter versions."""
        ...


def type_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
