"""From a runtime's raw output to the signature's outputs: one step shared by every runtime and
pattern, so the label a threshold gives is the same everywhere.

    >>> import numpy as np
    >>> finish("binary", np.array([0.2, 0.9]), 0.5)["label"].tolist()
    [0, 1]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fourfold.model.signature import Output, Task

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["finish", "finish_one", "to_arrow"]


def finish(task: Task, raw: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    if task == "binary":
        return {"score": raw, "label": (raw > threshold).astype(np.int64)}
    if task == "multiclass":
        return {"probabilities": raw, "label": np.argmax(raw, axis=1).astype(np.int64)}
    return {"value": raw}


def finish_one(task: Task, raw: np.ndarray, threshold: float) -> dict[str, object]:
    """:func:`finish` for a single row, as Python scalars (the low-latency path skips array ops)."""
    if task == "binary":
        score = float(raw[0])
        return {"score": score, "label": int(score > threshold)}
    return {k: v[0].tolist() for k, v in finish(task, raw, threshold).items()}


def to_arrow(out: Mapping[str, np.ndarray], outputs: Sequence[Output]) -> list[tuple[str, pa.Array]]:
    """The outputs as Arrow columns, in the signature's order and types - one encoding for every engine
    (local batch, Spark, the stream's sink): ``score`` / ``value`` double, ``label`` int64, class
    ``probabilities`` a ``list<element: double>`` (the field name Spark's ``ArrayType`` gives)."""
    import pyarrow as pa

    columns: list[tuple[str, pa.Array]] = []
    for o in outputs:
        values = np.asarray(out[o.name])
        if not o.shape:
            columns.append((o.name, pa.array(values.astype(np.dtype(o.dtype), copy=False))))
            continue
        rows = len(values)
        width = values.shape[1] if values.ndim == 2 else 0
        flat = pa.array(np.ascontiguousarray(values, dtype=np.dtype(o.dtype)).reshape(-1))
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * np.int32(width))
        columns.append(
            (o.name, pa.ListArray.from_arrays(offsets, flat, type=pa.list_(pa.field("element", flat.type))))
        )
    return columns
