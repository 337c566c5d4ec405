"""Reading an event log for the engines: the key, the event time in ms, and the columns the features use,
validated row by row without a Python loop.

A row is rejected (with the reason) when its key or timestamp is missing, or a value a feature needs is
null, NaN or infinite. A column of the wrong type (text where a number is needed, booleans) is an error
for the whole log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fourfold.errors import InputError
from fourfold.features.definitions import DefinitionError, FeatureSet, WindowedFeature

__all__ = ["EventBatch", "read_events", "single_source"]


@dataclass(frozen=True)
class EventBatch:
    keys: pa.Array  # the key column, as given
    ts: np.ndarray  # int64 ms; 0 where rejected
    columns: dict[str, np.ndarray]  # windowed features' value columns
    request: dict[str, np.ndarray]  # request features' values (float64)
    reason: np.ndarray  # int16 per row: 0 = fine, else an index into ``reasons``
    reasons: tuple[str | None, ...]

    @property
    def ok(self) -> np.ndarray:
        ok: np.ndarray = self.reason == 0
        return ok

    @property
    def rejected(self) -> np.ndarray:
        """Per row: None, or why the row was rejected."""
        out: np.ndarray = np.array(self.reasons, dtype=object)[self.reason]
        return out


def single_source(fs: FeatureSet) -> tuple[str, str]:
    """(key column, timestamp column) of the one event source the feature set's windows read."""
    sources = {f.source for f in fs.windowed}
    if len(sources) > 1:
        raise DefinitionError(
            f"feature set {fs.name!r} aggregates over several sources ({', '.join(sorted(sources))}); "
            "the engines compute one source at a time: split it into one feature set per source"
        )
    if not sources:
        src = fs.sources[0] if fs.sources else None
        if src is None:
            raise DefinitionError(f"feature set {fs.name!r} has no event source")
    else:
        src = fs.source(sources.pop())
    return fs.entity(src.entity).join_key, src.timestamp


def _column(table: pa.Table, name: str, role: str) -> pa.Array:
    if name not in table.column_names:
        raise InputError(
            f"the event log has no column {name!r} ({role}); columns: {', '.join(table.column_names)}"
        )
    return table.column(name).combine_chunks()


def _numeric(col: pa.Array, name: str) -> np.ndarray:
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
        raise InputError(f"column {name!r} must be numeric, got {t}")
    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _millis(col: pa.Array, name: str) -> np.ndarray:
    t = col.type
    if pa.types.is_timestamp(t):
        raw = pc.cast(col, pa.int64())
        unit = {"s": 1000, "ms": 1, "us": 1_000, "ns": 1_000_000}[t.unit]
        arr = np.asarray(
            raw.to_numpy(zero_copy_only=False) if not raw.null_count else raw.fill_null(0).to_numpy()
        )
        return arr * unit if t.unit == "s" else arr // unit
    if pa.types.is_integer(t):
        return np.asarray(col.fill_null(0).to_numpy(), dtype=np.int64)
    raise InputError(f"timestamp column {name!r} must be a timestamp or integer milliseconds, got {t}")


def read_events(table: pa.Table, fs: FeatureSet) -> EventBatch:
    key_name, ts_name = single_source(fs)
    n = table.num_rows
    code = np.zeros(n, dtype=np.int16)
    reasons: list[str | None] = [None]

    def reject(mask: np.ndarray, reason: str) -> None:
        fresh = mask & (code == 0)  # the first reason found for a row is the one reported
        if fresh.any():
            reasons.append(reason)
            code[fresh] = len(reasons) - 1

    keys = _column(table, key_name, "the entity key")
    reject(np.asarray(keys.is_null().to_numpy(zero_copy_only=False)), f"key {key_name!r} is missing")
    if pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type):
        reject(
            np.asarray(pc.equal(keys, "").fill_null(False).to_numpy(zero_copy_only=False)),
            f"key {key_name!r} is empty",
        )
    ts_col = _column(table, ts_name, "the event time")
    reject(np.asarray(ts_col.is_null().to_numpy(zero_copy_only=False)), f"timestamp {ts_name!r} is missing")
    ts = _millis(ts_col, ts_name)

    columns: dict[str, np.ndarray] = {}
    for feat in fs.windowed:
        if feat.column is None or feat.column in columns:
            continue
        columns[feat.column] = _values(table, feat, reject)
    request: dict[str, np.ndarray] = {}
    for rf in fs.request:
        col = _column(table, rf.field, f"request feature {rf.name!r}")
        values = _numeric(col, rf.field)
        reject(~np.isfinite(values), f"field {rf.field!r} must be a finite number")
        request[rf.name] = values
    ts = np.where(code == 0, ts, 0)
    return EventBatch(keys, ts, columns, request, code, tuple(reasons))


def _values(table: pa.Table, feat: WindowedFeature, reject: Any) -> np.ndarray:
    assert feat.column is not None
    col = _column(table, feat.column, f"feature {feat.name!r}")
    if feat.agg == "count_distinct":
        reject(np.asarray(col.is_null().to_numpy(zero_copy_only=False)), f"field {feat.column!r} is missing")
        if pa.types.is_floating(col.type):
            vals = _numeric(col, feat.column)
            reject(~np.isfinite(vals), f"field {feat.column!r} must be a finite number")
            return np.where(np.isfinite(vals), vals + 0.0, 0.0)  # -0.0 and 0.0 are one value
        if pa.types.is_integer(col.type):
            return np.asarray(col.fill_null(0).to_numpy(), dtype=np.int64)
        if (
            pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type)
            or pa.types.is_dictionary(col.type)
        ):
            # only equality matters to count_distinct: dictionary codes compare fastest
            encoded = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
            return np.asarray(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        raise InputError(f"column {feat.column!r} for count_distinct must be text or numbers, got {col.type}")
    vals = _numeric(col, feat.column)
    reject(~np.isfinite(vals), f"field {feat.column!r} must be a finite number")
    return np.where(np.isfinite(vals), vals, 0.0)
