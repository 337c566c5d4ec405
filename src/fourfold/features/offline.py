"""The offline engine: every event's feature values exactly as the incremental engine would have had
them when it scored that event, computed for a whole log at once (training data, batch scoring).

The log's row order is its arrival order. Late and rejected events get no features (NaN) and say why.

    >>> # fs = FeatureSet.load("features.yaml")
    >>> # features = compute_features(pq.read_table("transactions.parquet"), fs)
    >>> # features.column_names  ->  [*fs.names, "_late", "_lateness_ms", "_rejected"]
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fourfold.errors import InputError
from fourfold.features.definitions import FeatureSet
from fourfold.features.events import read_events, single_source
from fourfold.features.kernel import KernelResult, pairs_aggregate, range_aggregate, windowed_kernel

__all__ = ["PointInTime", "compute_features", "point_in_time_join"]

OnError = Literal["raise", "reject"]


def _codes(keys: pa.Array) -> np.ndarray:
    encoded = pc.dictionary_encode(keys.cast(pa.string()) if not pa.types.is_string(keys.type) else keys)
    return np.asarray(encoded.indices.fill_null(0).to_numpy(), dtype=np.int64)


def compute_features(log: pa.Table, fs: FeatureSet, *, on_error: OnError = "raise") -> pa.Table:
    """One row per event of ``log``: the feature set's features in order (entity features are NaN: they
    come from the online store), ``_late``, ``_lateness_ms`` and ``_rejected`` (the reason, or null).

    ``on_error="raise"`` raises an :class:`InputError` naming the first bad row instead."""
    batch = read_events(log, fs)
    ok = batch.ok
    if on_error == "raise" and not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise InputError(f"event log row {row}: {batch.rejected[row]} ({int((~ok).sum())} bad row(s) in all)")
    rows = np.flatnonzero(ok)
    n = log.num_rows
    result = _kernel_by_key_chunks(
        _codes(batch.keys)[rows],
        batch.ts[rows],
        {c: v[rows] for c, v in batch.columns.items()},
        fs,
    )
    late = np.zeros(n, dtype=bool)
    late[rows] = result.late
    lateness = np.zeros(n, dtype=np.int64)
    lateness[rows] = result.lateness_ms
    out: dict[str, Any] = {}
    for f in fs.features:
        col = np.full(n, np.nan)
        if f.name in result.values:
            col[rows] = result.values[f.name]
        elif f.name in batch.request:
            col[rows] = batch.request[f.name][rows]
            col[late] = np.nan
        out[f.name] = col
    out["_late"] = late
    out["_lateness_ms"] = lateness
    out["_rejected"] = pa.array(batch.rejected, type=pa.string())
    return pa.table(out)


_CHUNK_ROWS = 500_000


def _kernel_by_key_chunks(
    codes: np.ndarray, ts: np.ndarray, columns: dict[str, np.ndarray], fs: FeatureSet
) -> KernelResult:
    """Windows and lateness never cross keys, so disjoint key groups are computed apart: in cache-sized
    chunks, on two threads (NumPy releases the GIL in sorts, searches and gathers)."""
    n = len(codes)
    parts = max(1, -(-n // _CHUNK_ROWS))
    if parts == 1:
        return windowed_kernel(codes, ts, columns, fs.windowed, lateness_ms=fs.allowed_lateness.ms)
    groups = [np.flatnonzero(codes % parts == p) for p in range(parts)]
    with ThreadPoolExecutor(max_workers=min(parts, os.cpu_count() or 1)) as pool:
        results = list(
            pool.map(
                lambda rows: windowed_kernel(
                    codes[rows],
                    ts[rows],
                    {c: v[rows] for c, v in columns.items()},
                    fs.windowed,
                    lateness_ms=fs.allowed_lateness.ms,
                ),
                groups,
            )
        )
    late = np.zeros(n, dtype=bool)
    lateness = np.zeros(n, dtype=np.int64)
    values = {f.name: np.full(n, np.nan) for f in fs.windowed}
    for rows, part in zip(groups, results, strict=True):
        late[rows] = part.late
        lateness[rows] = part.lateness_ms
        for name, col in part.values.items():
            values[name][rows] = col
    return KernelResult(late, lateness, values)


def point_in_time_join(
    rows: pa.Table, log: pa.Table, fs: FeatureSet, *, timestamp: str | None = None
) -> pa.Table:
    """For each (entity key, timestamp) row of ``rows``, the windowed features as of that timestamp over
    the accepted events of ``log`` (window ``[t - W, t)``); other features are NaN.

    Events are judged late exactly as :func:`compute_features` judges them."""
    key_name, ts_name = single_source(fs)
    probe = read_events(_as_probe(rows, key_name, ts_name, timestamp or ts_name, fs), fs)
    if not probe.ok.all():
        row = int(np.flatnonzero(~probe.ok)[0])
        raise InputError(f"row {row}: {probe.rejected[row]}")
    values = PointInTime(log, fs).at(probe.keys, probe.ts)
    return _attach(rows, {f.name: values.get(f.name, np.full(rows.num_rows, np.nan)) for f in fs.features})


class PointInTime:
    """A log prepared once for many point-in-time lookups (batch scoring): ``at(keys, ts_ms)`` gives the
    windowed features of each (key, time) over the events before it, as :func:`point_in_time_join`.

    The accepted events are sorted by (key, time) once; each lookup is two binary searches per feature."""

    def __init__(self, log: pa.Table, fs: FeatureSet) -> None:
        self.fs = fs
        scored = compute_features(log, fs, on_error="reject")
        accepted = pc.and_(pc.invert(scored["_late"]), pc.is_null(scored["_rejected"]))
        events = read_events(log.filter(accepted), fs)
        keys = events.keys.cast(pa.string())
        self._dictionary = pc.unique(keys)
        codes = np.asarray(pc.index_in(keys, value_set=self._dictionary).to_numpy(), dtype=np.int64)
        self._order = np.lexsort((events.ts, codes))
        widest = max((f.window.ms + (f.hop.ms if f.hop else 0) for f in fs.windowed), default=0)
        lo, hi = (int(events.ts.min()), int(events.ts.max())) if len(events.ts) else (0, 0)
        # lookups are clipped into [lo - widest - 1, hi + 2 * widest + 2]: beyond it every window is empty
        self._base, self._top = lo - 2 * widest - 2, hi + 2 * widest + 2
        self._span = self._top - self._base + 1
        self._comp = codes[self._order] * self._span + (events.ts[self._order] - self._base)
        self._columns = {c: v[self._order] for c, v in events.columns.items()}

    def at(self, keys: pa.Array, ts_ms: np.ndarray) -> dict[str, np.ndarray]:
        """The windowed features (by name) for each ``(keys[i], ts_ms[i])``; unknown keys: empty windows."""
        codes = pc.index_in(keys.cast(pa.string()), value_set=self._dictionary)
        unknown = len(self._dictionary)  # a code no event has
        code = np.asarray(codes.fill_null(unknown).to_numpy(), dtype=np.int64) * self._span
        t = np.clip(np.asarray(ts_ms, dtype=np.int64), self._base, self._top)
        hi = np.searchsorted(self._comp, code + (t - self._base), side="left")
        out: dict[str, np.ndarray] = {}
        for feat in self.fs.windowed:
            w, hop = feat.window.ms, (feat.hop.ms if feat.hop else 0)
            first = (t - w) // hop * hop if hop else t - w
            lo = np.searchsorted(self._comp, code + np.maximum(first - self._base, 0), side="left")
            lo = np.minimum(lo, hi)
            vals = None if feat.column is None else self._columns[feat.column]
            if feat.agg == "count_distinct":
                out[feat.name] = pairs_aggregate(feat.agg, vals, lo, hi)
            else:
                out[feat.name] = range_aggregate(feat.agg, vals, lo, hi)
        return out

    def save(self, directory: Path) -> None:
        """Write the index to ``directory`` (NumPy ``.npy`` arrays, the keys as an Arrow IPC file), so
        other processes :meth:`load` it - memory-mapped, shared - instead of re-reading the log.

        >>> # pit.save(staging / "_pit"); PointInTime.load(staging / "_pit", fs).at(keys, ts)"""
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "comp.npy", self._comp)
        names = list(self._columns)
        for i, name in enumerate(names):
            np.save(directory / f"column-{i}.npy", self._columns[name])
        table = pa.table({"key": self._dictionary})
        with pa.OSFile(str(directory / "keys.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        meta = {"base": self._base, "top": self._top, "span": self._span, "columns": names,
                "features": _fingerprint(self.fs)}  # fmt: skip
        (directory / "index.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path, fs: FeatureSet) -> PointInTime:
        """The index :meth:`save` wrote, its arrays memory-mapped read-only; ``fs`` must be the feature
        set it was built for (an :class:`InputError` otherwise)."""
        meta = json.loads((directory / "index.json").read_text())
        if meta["features"] != _fingerprint(fs):
            raise InputError(f"the point-in-time index in {directory} was built for other windowed features")
        pit = cls.__new__(cls)
        pit.fs = fs
        pit._base, pit._top, pit._span = int(meta["base"]), int(meta["top"]), int(meta["span"])
        pit._comp = np.load(directory / "comp.npy", mmap_mode="r")
        pit._columns = {
            name: np.load(directory / f"column-{i}.npy", mmap_mode="r")
            for i, name in enumerate(meta["columns"])
        }
        keys = pa.ipc.open_file(pa.memory_map(str(directory / "keys.arrow"))).read_all()  # zero-copy
        pit._dictionary = keys.column("key").combine_chunks()
        return pit


def _fingerprint(fs: FeatureSet) -> str:
    return hashlib.sha256(repr(fs.windowed).encode()).hexdigest()


def _attach(rows: pa.Table, out: dict[str, Any]) -> pa.Table:
    for name, col in out.items():
        if name in rows.column_names:
            rows = rows.drop_columns([name])
        rows = rows.append_column(name, pa.array(col))
    return rows


def _as_probe(rows: pa.Table, key: str, ts_name: str, given_ts: str, fs: FeatureSet) -> pa.Table:
    cols: dict[str, Any] = {key: rows.column(key), ts_name: rows.column(given_ts)}
    for f in fs.windowed:  # probes carry no values: give the columns a harmless constant
        if f.column and f.column not in cols:
            cols[f.column] = pa.array(np.zeros(rows.num_rows))
    for r in fs.request:
        cols[r.field] = pa.array(np.zeros(rows.num_rows))
    return pa.table(cols)
