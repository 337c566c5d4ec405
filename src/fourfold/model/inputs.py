"""Turning a columnar batch into the model's input matrix, validated against the signature.

Accepted batches: an Arrow Table or RecordBatch, a pandas DataFrame, a mapping of column name to array
(or list), or a 2-D array whose columns are in the signature's order. Column order in a named batch never
matters: columns are picked by name.

    >>> from fourfold.model.signature import Feature, Signature
    >>> sig = Signature.for_task("regression", [Feature("a"), Feature("b")])
    >>> to_matrix({"b": [2.0], "a": [1.0]}, sig).tolist()
    [[1.0, 2.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fourfold.errors import (
    FeatureTypeError,
    InputError,
    MissingFeatureError,
    NullFeatureError,
    ShapeError,
    UnknownFeatureError,
)
from fourfold.model.signature import Signature

__all__ = ["as_columns", "row_to_matrix", "to_matrix"]

_NUMERIC_KINDS = "fiub"


def column_names(batch: Any) -> list[str]:
    """The names of a batch's columns, without converting any."""
    if isinstance(batch, Mapping):
        return [str(k) for k in batch]
    if hasattr(batch, "column_names") and hasattr(batch, "column"):  # pyarrow Table / RecordBatch
        return list(batch.column_names)
    if hasattr(batch, "columns") and hasattr(batch, "to_numpy") and hasattr(batch, "iloc"):  # pandas
        return [str(c) for c in batch.columns]
    raise InputError(
        f"cannot read a batch of type {type(batch).__name__}; pass an Arrow table or record batch, "
        "a pandas DataFrame, a dict of arrays, or a 2-D array in the signature's column order"
    )


def as_columns(batch: Any, only: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The batch's columns (or just ``only``) as NumPy arrays (Arrow nulls become NaN in float columns).

    Columns the model does not use - ids, text, timestamps - are never converted."""
    names = column_names(batch) if only is None else list(only)
    if isinstance(batch, Mapping):
        keyed = {str(k): v for k, v in batch.items()}
        return {n: _as_array(n, keyed[n]) for n in names}
    if hasattr(batch, "column_names") and hasattr(batch, "column"):  # pyarrow Table / RecordBatch
        return {n: _arrow_to_numpy(n, batch.column(n)) for n in names}
    return {n: _as_array(n, batch[n].to_numpy()) for n in names}  # pandas


def _arrow_to_numpy(name: str, column: Any) -> np.ndarray:
    import pyarrow as pa

    if hasattr(column, "combine_chunks"):
        column = column.combine_chunks()
    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        if pa.types.is_null(t):
            return np.full(len(column), np.nan)
        if pa.types.is_decimal(t):  # SQL NUMERIC: a number, scored as float64 like every other
            return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
        raise FeatureTypeError(name, "a number", f"an Arrow column of type {t}")
    if column.null_count:
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _as_array(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in _NUMERIC_KINDS:
        return arr
    if arr.dtype.kind == "O":
        try:  # lists with None, or pandas' nullable columns: None -> NaN
            return np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError):
            pass
    bad = next((v for v in arr.ravel() if not isinstance(v, int | float | bool | np.number)), None)
    shown = f"{type(bad).__name__} {bad!r}" if bad is not None else f"an array of dtype {arr.dtype}"
    raise FeatureTypeError(name, "a number", shown)


def to_matrix(
    batch: Any,
    signature: Signature,
    dtype: type[np.floating[Any]] = np.float64,
    *,
    strict: bool = False,
    model: str = "the model",
) -> np.ndarray:
    """A C-contiguous ``[rows, features]`` matrix in the signature's order, or an :class:`InputError`."""
    features = signature.inputs
    if isinstance(batch, np.ndarray) and batch.ndim == 2:
        if batch.shape[1] != len(features):
            raise ShapeError(
                f"a 2-D array must have {len(features)} columns in the signature's order "
                f"({', '.join(signature.feature_names)}); got {batch.shape[1]}"
            )
        if batch.dtype.kind not in _NUMERIC_KINDS:
            raise FeatureTypeError("(2-D array)", "numeric", f"dtype {batch.dtype}")
        with np.errstate(over="ignore"):  # out-of-range values become inf and are refused below
            x = np.ascontiguousarray(batch, dtype=dtype)
    else:
        if isinstance(batch, np.ndarray):
            raise ShapeError(f"an array batch must be 2-D [rows, features]; got {batch.ndim}-D")
        present = column_names(batch)
        names = signature.feature_names
        for name in names:
            if name not in present:
                raise MissingFeatureError(name, list(names), model=model)
        if strict and len(present) != len(names):
            unknown = [c for c in present if signature.index(c) is None]
            raise UnknownFeatureError(unknown, list(names), model=model)
        columns = as_columns(batch, names)
        n = len(columns[names[0]])
        x = np.empty((n, len(names)), dtype=dtype)
        for j, name in enumerate(names):
            col = columns[name]
            if col.ndim != 1 or len(col) != n:
                raise ShapeError(
                    f"feature {name!r} has shape {col.shape}; every feature must be 1-D with {n} rows"
                )
            with np.errstate(over="ignore"):
                x[:, j] = col
    _check_values(x, signature)
    return x


def row_to_matrix(
    row: Mapping[str, Any],
    signature: Signature,
    dtype: type[np.floating[Any]] = np.float64,
    *,
    strict: bool = False,
    model: str = "the model",
) -> np.ndarray:
    """The low-latency single-row path: a ``[1, features]`` matrix from a mapping of scalars."""
    names = signature.feature_names
    if strict and len(row) != len(names):
        unknown = [c for c in row if signature.index(c) is None]
        if unknown:
            raise UnknownFeatureError(unknown, list(names), model=model)
    values: list[Any] = []
    append = values.append
    for name in names:  # one pass: the common case is a plain float or int
        try:
            v = row[name]
        except KeyError:
            raise MissingFeatureError(name, list(names), model=model) from None
        t = type(v)
        if t is float or t is int:
            append(v)
        elif v is None:
            append(np.nan)
        elif isinstance(v, bool | np.number) and not isinstance(v, np.datetime64 | np.timedelta64):
            append(v)
        else:
            raise FeatureTypeError(name, "a number", f"{t.__name__} {v!r}")
    with np.errstate(over="ignore"):
        x = np.array(values, dtype=dtype).reshape(1, len(names))
    _check_values(x, signature)
    return x


def _check_values(x: np.ndarray, signature: Signature) -> None:
    """No NaN where the signature forbids it, and nothing infinite or beyond the input dtype's range."""
    if x.size == 0:
        return
    if np.isfinite(x).all():  # the common, clean case: one pass, no floating-point error state to set
        return
    infinite = np.isinf(x)
    if infinite.any():
        col = int(np.flatnonzero(infinite.any(axis=0))[0])
        raise FeatureTypeError(
            signature.inputs[col].name,
            f"a finite number within the model's {x.dtype} input range",
            f"{int(infinite[:, col].sum())} value(s) out of range",
        )
    required = [j for j, f in enumerate(signature.inputs) if not f.nullable]
    if not required:
        return
    sub = x if len(required) == x.shape[1] else x[:, required]
    bad = np.isnan(sub)
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        rows = np.flatnonzero(bad[:, col])
        raise NullFeatureError(signature.inputs[required[col]].name, [int(r) for r in rows[:100]])
