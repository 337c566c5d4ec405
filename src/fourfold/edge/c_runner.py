"""The ``c`` runner: a tree ensemble compiled to a shared library, called through ctypes.

The library is tl2cgen's generated code with fourfold's wrapper (``fourfold_trees.c``):
``fourfold_predict(x, n_rows, out)`` for a matrix and ``fourfold_predict_row(x, out)`` for one row,
both writing the raw form into ``out``. ``score_row`` calls the one-row entry with pointers to ``row``
and to an output buffer built once, so a call allocates nothing but the float it returns.

    >>> # r = CRunner(Path("bundle/model"), {"format": "c", "file": "model.so", "input_dtype": "float32",
    >>> #             "n_features": 30, "n_outputs": 1, "machine": "x86_64", "system": "Linux"}, "binary")
    >>> # r.row[0] = features; r.score_row()

A library built for another machine or system, or whose sha256 or shape differs from its spec, is
refused with :class:`ForeignLibraryError` (an ``OSError``, like the one ``ctypes`` raises for a library
it cannot load), before it is loaded. Standard library and NumPy only: this module is vendored.
"""

from __future__ import annotations

import ctypes
import hashlib
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CRunner", "ForeignLibraryError"]

_DTYPES: dict[str, type[np.floating[Any]]] = {"float32": np.float32, "float64": np.float64}


class ForeignLibraryError(OSError):
    """A compiled model library that must not be loaded here: built for another machine or system,
    changed since it was built, or not the shape its spec says."""


class CRunner:
    """Scores rows with a compiled tree library (see the module docstring)."""

    def __init__(self, directory: Path, spec: Mapping[str, Any], task: str) -> None:
        path = Path(directory) / str(spec.get("file", "model.so"))
        machine, system = platform.machine(), platform.system()
        built = f"{spec.get('system')}/{spec.get('machine')}"
        if spec.get("machine") != machine or spec.get("system") != system:
            raise ForeignLibraryError(
                f"{path} was built for {built}, this is {system}/{machine}; rebuild it from its sources "
                f"(run make in {path.parent})"
            )
        dtype = _DTYPES.get(str(spec.get("input_dtype")))
        if dtype is None:
            raise ValueError(f"input_dtype must be float32 or float64, got {spec.get('input_dtype')!r}")
        expected = spec.get("sha256")
        if expected is not None:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != expected:
                raise ForeignLibraryError(
                    f"{path} has sha256 {actual[:16]}..., its spec says {str(expected)[:16]}...: "
                    "refusing to load it"
                )
        lib = ctypes.CDLL(str(path))
        n_features, n_outputs = int(spec["n_features"]), int(spec["n_outputs"])
        found = (lib.fourfold_n_features(), lib.fourfold_n_outputs(), lib.fourfold_input_bytes())
        if found != (n_features, n_outputs, np.dtype(dtype).itemsize):
            raise ForeignLibraryError(
                f"{path} takes {found[0]} features ({found[2]}-byte values) and gives {found[1]} output(s); "
                f"its spec says {n_features} ({np.dtype(dtype).itemsize}-byte) and {n_outputs}"
            )
        self._lib = lib  # held: the functions below live as long as the library stays loaded
        self._batch = lib.fourfold_predict
        self._batch.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
        self._batch.restype = ctypes.c_int
        self._one = lib.fourfold_predict_row
        self._one.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._one.restype = ctypes.c_int
        self.task = task
        self.input_dtype: type[np.floating[Any]] = dtype
        self.n_features = n_features
        self.n_outputs = n_outputs
        self.row = np.zeros((1, n_features), dtype=dtype)
        self._out = np.zeros(n_outputs, dtype=np.float64)
        # built once: a call converts nothing (c_void_p instances pass straight through their argtype)
        self._row_args = (ctypes.c_void_p(self.row.ctypes.data), ctypes.c_void_p(self._out.ctypes.data))
        self._multiclass = task == "multiclass"

    def score_row(self) -> Any:
        """The raw output for ``row``: a float (binary, regression) or a new array of class
        probabilities (multiclass). Not thread-safe: ``row`` and the output buffer are this runner's."""
        self._one(*self._row_args)
        if self._multiclass:
            return self._out.copy()
        return float(self._out[0])

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """The raw output for a ``[rows, features]`` matrix (thread-safe: ctypes releases the GIL)."""
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a [rows, {self.n_features}] matrix, got shape {x.shape}")
        out = np.empty((len(x), self.n_outputs), dtype=np.float64)
        if self._batch(x.ctypes.data, len(x), out.ctypes.data) != 0:
            raise RuntimeError("fourfold_predict refused its arguments")
        return out if self._multiclass else out.reshape(len(x))
