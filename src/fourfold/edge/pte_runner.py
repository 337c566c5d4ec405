"""ExecuTorch (``executorch.runtime``, the Python runtime API) behind the edge runner contract.

The program's ``forward`` method is loaded once. ExecuTorch's Python runtime takes torch tensors, so
the runner's ``row`` is a NumPy buffer with a torch tensor sharing its memory, in an argument list built
once: ``score_row`` is one ``execute`` and one read of the output. ``predict_raw`` feeds blocks of at
most ``spec["max_batch"]`` rows (the dynamic batch's upper bound, for which the memory is planned); a
program exported with a fixed batch of 1 (``spec["batch"] == 1``) is called row by row.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PteRunner"]


def _runtime() -> Any:
    with warnings.catch_warnings():
        # the runtime's module warns "This API is experimental" (a DeprecationWarning) on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from executorch.runtime import Runtime

        return Runtime.get()


class PteRunner:
    def __init__(self, directory: Path, spec: Mapping[str, Any], task: str) -> None:
        import torch

        self._torch = torch
        program = _runtime().load_program(directory / str(spec["file"]))
        method = program.load_method(str(spec.get("method", "forward")))
        if method is None:
            raise ValueError(f"{spec['file']} has no method {spec.get('method', 'forward')!r}")
        self._call = method._method  # Method.execute is this call behind one more Python frame
        meta = method.metadata
        out_sizes = tuple(meta.output_tensor_meta(0).sizes())
        self._classes = int(out_sizes[-1]) if len(out_sizes) == 2 else 1
        self.task = task
        self.input_dtype: type[np.floating[Any]] = np.float32
        self.row = np.zeros((1, int(meta.input_tensor_meta(0).sizes()[1])), dtype=np.float32)
        self._args = [torch.from_numpy(self.row)]
        self._block = int(spec.get("max_batch", 1)) if spec.get("batch", "dynamic") == "dynamic" else 1

    def score_row(self) -> Any:
        (y,) = self._call(self._args)
        if self.task == "multiclass":
            return y.numpy()[0].astype(np.float64)  # a copy: the output lives in the program's memory
        return y.item()

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts = []
        for start in range(0, len(x), self._block):
            (y,) = self._call([self._torch.from_numpy(x[start : start + self._block])])
            parts.append(np.array(y.numpy(), dtype=np.float64))
        if not parts:
            return np.empty((0, self._classes) if self.task == "multiclass" else (0,), dtype=np.float64)
        y = np.concatenate(parts)
        return y if self.task == "multiclass" else y.reshape(len(x))
