"""The signature: the ordered input features a model takes and the outputs it returns.

Every pattern validates against the same signature, so a feature means the same thing online, in batch,
on a stream and on a device.

    >>> sig = Signature.for_task("binary", [Feature("amount"), Feature("hour", "int64")])
    >>> sig.feature_names
    ('amount', 'hour')
    >>> [o.name for o in sig.outputs]
    ['score', 'label']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["DTYPES", "Feature", "Output", "Signature", "Task", "infer_signature"]

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")

#: Feature dtypes a signature may name. Models take numbers: categories are integer codes.
DTYPES: tuple[str, ...] = ("float64", "float32", "int64", "int32", "int16", "int8", "bool")


@dataclass(frozen=True, slots=True)
class Feature:
    """One input feature. ``nullable`` says whether a null / NaN is a valid value for it."""

    name: str
    dtype: str = "float64"
    nullable: bool = False

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a feature name must be a non-empty string, got {self.name!r}")
        if self.dtype not in DTYPES:
            raise ValueError(
                f"feature {self.name!r} has dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}"
            )

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith("float")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "nullable": self.nullable}


@dataclass(frozen=True, slots=True)
class Output:
    """One output array: ``score`` (probability of the positive class), ``label``, ``value`` ..."""

    name: str
    dtype: str = "float64"
    shape: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Signature:
    """Ordered inputs, outputs and the task. Build one with :meth:`for_task` or :func:`infer_signature`."""

    inputs: tuple[Feature, ...]
    outputs: tuple[Output, ...]
    task: Task = "binary"
    classes: tuple[Any, ...] = ()
    _index: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.inputs:
            raise ValueError("a signature needs at least one input feature")
        names = [f.name for f in self.inputs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate feature name(s) in signature: {', '.join(dupes)}")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    @classmethod
    def for_task(
        cls, task: Task, inputs: Iterable[Feature], *, classes: Sequence[Any] = (), n_classes: int = 0
    ) -> Signature:
        """The standard outputs for a task: binary → score, label; multiclass → probabilities, label;
        regression → value."""
        if task == "binary":
            outputs: tuple[Output, ...] = (Output("score"), Output("label", "int64"))
        elif task == "multiclass":
            k = n_classes or len(classes)
            outputs = (Output("probabilities", "float64", (k,)), Output("label", "int64"))
        else:
            outputs = (Output("value"),)
        return cls(tuple(inputs), outputs, task, tuple(classes))

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.inputs)

    def index(self, name: str) -> int | None:
        return self._index.get(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "inputs": [f.to_dict() for f in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
            "classes": [_plain(c) for c in self.classes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=tuple(
                Feature(d["name"], d.get("dtype", "float64"), bool(d.get("nullable", False)))
                for d in data["inputs"]
            ),
            outputs=tuple(
                Output(d["name"], d.get("dtype", "float64"), tuple(d.get("shape", ())))
                for d in data["outputs"]
            ),
            task=data.get("task", "binary"),
            classes=tuple(data.get("classes", ())),
        )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def infer_signature(sample: Any, *, task: Task, classes: Sequence[Any] = (), n_classes: int = 0) -> Signature:
    """Infer the inputs from a sample (Arrow table / record batch, pandas DataFrame or dict of arrays).

    A feature is nullable when the sample holds a null or NaN in it; declare the signature yourself
    when production data may carry missing values the sample does not show.

        >>> import pyarrow as pa
        >>> infer_signature(pa.table({"a": [1.0, None], "b": [1, 2]}), task="regression").inputs
        (Feature(name='a', dtype='float64', nullable=True), Feature(name='b', dtype='int64', nullable=False))
    """
    from fourfold.model.columns import as_columns

    columns = as_columns(sample)
    features = []
    for name, column in columns.items():
        dtype = np.dtype(column.dtype)
        if dtype.kind == "f":
            kind = "float32" if dtype == np.float32 else "float64"
            nullable = bool(np.isnan(column).any())
        elif dtype.kind in "iu":
            kind = {1: "int8", 2: "int16", 4: "int32"}.get(dtype.itemsize, "int64")
            nullable = False
        elif dtype.kind == "b":
            kind, nullable = "bool", False
        else:
            raise ValueError(
                f"column {name!r} of the sample has dtype {dtype}; model inputs must be numeric "
                "(encode categories as integer codes)"
            )
        features.append(Feature(name, kind, nullable))
    return Signature.for_task(task, features, classes=classes, n_classes=n_classes)
