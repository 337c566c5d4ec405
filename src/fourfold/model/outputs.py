"""From a runtime's raw output to the signature's outputs: one step shared by every runtime and
pattern, so the label a threshold gives is the same everywhere.

    >>> import numpy as np
    >>> finish("binary", np.array([0.2, 0.9]), 0.5)["label"].tolist()
    [0, 1]
"""

from __future__ import annotations

import numpy as np

from fourfold.model.signature import Task

__all__ = ["finish", "finish_one"]


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
