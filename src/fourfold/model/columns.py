"""A batch's columns as NumPy arrays, whatever the batch is: an Arrow Table or RecordBatch, a pandas
DataFrame, or a mapping of column name to array (or list).

Only the columns asked for are converted (ids, text and timestamps a model does not use never are), and
a column's type decides once whether it can hold a model input at all (:func:`column_type_error`): the
per-row rules live in :mod:`fourfold.model.check`.

    >>> import pyarrow as pa
    >>> as_columns(pa.table({"a": [1.0, None], "b": ["x", "y"]}), ["a"])["a"].tolist()
    [1.0, nan]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fourfold.errors import FeatureTypeError, InputError

__all__ = [
    "as_columns", "column_names", "column_type_error", "is_arrow", "is_pandas", "null_mask", "shown",
]  # fmt: skip

_NUMERIC_KINDS = "fiu"


def is_arrow(batch: Any) -> bool:
    return hasattr(batch, "column_names") and hasattr(batch, "column") and hasattr(batch, "schema")


def is_pandas(batch: Any) -> bool:
    return hasattr(batch, "columns") and hasattr(batch, "to_numpy") and hasattr(batch, "iloc")


def column_names(batch: Any) -> list[str]:
    """The names of a batch's columns, without converting any."""
    if isinstance(batch, Mapping):
        return [str(k) for k in batch]
    if is_arrow(batch):
        return list(batch.column_names)
    if is_pandas(batch):
        return [str(c) for c in batch.columns]
    raise InputError(
        f"cannot read a batch of type {type(batch).__name__}; pass an Arrow table or record batch, "
        "a pandas DataFrame, a dict of arrays, a list of row mappings, or a 2-D array in the signature's "
        "column order"
    )


def column_type_error(dtype: str, arrow_type: Any) -> str | None:
    """Why an Arrow column of ``arrow_type`` cannot hold a feature of signature dtype ``dtype`` (None: it
    can). Numbers (integers, floats, decimals) feed every numeric feature; booleans feed only ``bool``
    features - a boolean is not a number. An all-null column is a column of missing values."""
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_null(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return None
    if pa.types.is_boolean(t):
        return None if dtype == "bool" else "a number, got an Arrow column of type bool"
    return f"{'0 or 1' if dtype == 'bool' else 'a number'}, got an Arrow column of type {t}"


def _numpy_type_error(dtype: str | None, arr: np.ndarray) -> str | None:
    kind = arr.dtype.kind
    if kind in _NUMERIC_KINDS:
        return None
    if kind == "b":
        return None if dtype in (None, "bool") else "a number, got a boolean array"
    return None if kind == "O" else f"a number, got an array of dtype {arr.dtype}"


def as_columns(
    batch: Any, only: Sequence[str] | None = None, dtypes: Mapping[str, str] | None = None
) -> dict[str, np.ndarray]:
    """The batch's columns (or just ``only``) as 1-D NumPy arrays; nulls become NaN.

    ``dtypes`` (feature name -> signature dtype) refuses, with a :class:`FeatureTypeError` naming the
    column, a column that cannot hold that feature (text; booleans for a numeric feature)."""
    names = column_names(batch) if only is None else list(only)
    want = dtypes or {}
    if isinstance(batch, Mapping):
        keyed = {str(k): v for k, v in batch.items()}
        return {n: _as_array(n, keyed[n], want.get(n)) for n in names}
    if is_arrow(batch):
        return {n: _arrow_to_numpy(n, batch.column(n), want.get(n)) for n in names}
    return {n: _as_array(n, batch[n].to_numpy(), want.get(n)) for n in names}  # pandas


def _arrow_to_numpy(name: str, column: Any, dtype: str | None) -> np.ndarray:
    import pyarrow as pa

    if hasattr(column, "combine_chunks"):
        column = column.combine_chunks()
    t = column.type
    problem = column_type_error(dtype or "float64", t)
    if problem is not None and (dtype is not None or not pa.types.is_boolean(t)):
        raise FeatureTypeError(name, *problem.split(", got ", 1))
    if pa.types.is_null(t):
        return np.full(len(column), np.nan)
    if pa.types.is_decimal(t):  # SQL NUMERIC: a number, scored as float64 like every other
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if column.null_count:
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _as_array(name: str, values: Any, dtype: str | None) -> np.ndarray:
    """``dtype`` None: no feature yet (signature inference) - booleans are kept as such."""
    if isinstance(values, list | tuple):  # Python values: a bool is not a number, whatever numpy says
        bad = next((v for v in values if not _plain_number(v, dtype)), _OK)
        if bad is not _OK:
            raise FeatureTypeError(name, "0 or 1" if dtype == "bool" else "a number", shown(bad))
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    arr = np.asarray(values)
    problem = _numpy_type_error(dtype, arr)
    if problem is not None:
        raise FeatureTypeError(name, *problem.split(", got ", 1))
    if arr.dtype.kind != "O":
        return arr
    bad = next((v for v in arr.ravel() if not _plain_number(v, dtype)), _OK)
    if bad is not _OK:
        raise FeatureTypeError(name, "0 or 1" if dtype == "bool" else "a number", shown(bad))
    return np.asarray([np.nan if v is None else v for v in arr.ravel()], dtype=np.float64).reshape(arr.shape)


_OK = object()


def _plain_number(v: Any, dtype: str | None) -> bool:
    """A value a numeric feature takes: int, float, a NumPy number (not a datetime), None (missing) -
    and for a ``bool`` feature also a bool. pandas' missing markers count as None."""
    t = type(v)
    if t is float or t is int or v is None:
        return True
    if t is bool or t is np.bool_:
        return dtype in (None, "bool")
    if isinstance(v, np.number):
        return True
    return _is_missing_marker(v)


def _is_missing_marker(v: Any) -> bool:
    name = type(v).__name__
    return name in ("NAType", "NaTType") and type(v).__module__.startswith("pandas")


def shown(v: Any) -> str:
    """A value as an error message shows it: its type and a repr of at most 40 characters."""
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def null_mask(batch: Any, name: str) -> np.ndarray:
    """Which rows of column ``name`` are null (None / NaN / Arrow null), whatever its type."""
    if is_arrow(batch):
        col = batch.column(name)
        return np.asarray(col.is_null(nan_is_null=True).to_numpy(zero_copy_only=False), dtype=bool)
    values = batch[name] if isinstance(batch, Mapping) else batch[name].to_numpy()
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind == "O":
        return np.fromiter(
            (v is None or (isinstance(v, float) and v != v) or _is_missing_marker(v) for v in arr),
            dtype=bool,
            count=len(arr),
        )
    return np.zeros(len(arr), dtype=bool)
