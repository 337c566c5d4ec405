"""A feature set's online side: per-entity state and precomputed values in an online store, read "as of
now" with the incremental engine's own rules.

The store keeps, per entity, the incremental engine's state blob under ``_state`` in the feature set's
namespace (its event time is the key's newest event), and the entity features' values in the namespace
``<name>__entities`` (their event time is the batch job's): two writers with their own clocks, so the
store's rule that an older write never overwrites a newer one holds for each.

A windowed feature is never a value frozen at the entity's last event: a read loads the state and
computes the window ``[now - W, now)``, so a count over the last 10 minutes falls back to 0 ten minutes
after the last transaction - the value the incremental engine would compute at that time.

    >>> # online = OnlineFeatures(fs, open_store("redis://127.0.0.1:6379/0"))
    >>> # online.materialize(log)            # nightly: state from the offline log
    >>> # online.update_many(events)         # streaming: fold a batch and write the changed states back
    >>> # online.get(["u000042"])            # online: one round trip for many entities
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from fourfold.errors import InputError
from fourfold.features.definitions import FeatureSet
from fourfold.features.events import read_events, single_source
from fourfold.features.incremental import IncrementalEngine, Late, Rejected, Scored
from fourfold.features.offline import compute_features
from fourfold.features.state import KeyState, Layout, encode
from fourfold.features.stores.base import AsyncOnlineStore, OnlineStore

__all__ = ["STATE_FIELD", "MaterializeReport", "OnlineFeatures"]

STATE_FIELD = "_state"
_WRITE_CHUNK = 1000
_DECODED_CACHE = 10_000  # decoded states kept per process, by blob


@dataclass(frozen=True)
class MaterializeReport:
    entities: int
    events: int
    late: int
    rejected: int
    stale: list[str]


class OnlineFeatures:
    """Reads and writes one feature set's entities in an online store (the namespace is its name)."""

    def __init__(self, feature_set: FeatureSet, store: OnlineStore | None = None) -> None:
        self.fs = feature_set
        self._store = store
        self.namespace = feature_set.name
        self.entity_namespace = feature_set.entity_namespace
        self.key_column, self.ts_column = single_source(feature_set)
        self._engine = IncrementalEngine(feature_set)
        self._layout = Layout.of(feature_set)
        self._entity_names = [f.name for f in feature_set.entity_features]
        self._decoded: OrderedDict[bytes, KeyState] = OrderedDict()

    @property
    def store(self) -> OnlineStore:
        """The sync store (the async path passes its store to :meth:`aget`)."""
        if self._store is None:
            raise ValueError("this OnlineFeatures has no sync store: pass one, or use aget(store, ...)")
        return self._store

    # -- writing -----------------------------------------------------------------------------------------
    def materialize(self, log: pa.Table, *, ttl_s: float | None = None) -> MaterializeReport:
        """Replay ``log`` (in arrival order) to every key's final incremental state and write it.

        Vectorized: the offline engine decides late and rejected events; the state per key is its accepted
        events within the state horizon, in (time, arrival) order - what the incremental engine would hold."""
        flags = compute_features(log, self.fs, on_error="reject")
        batch = read_events(log, self.fs)
        late = flags["_late"].to_numpy(zero_copy_only=False)
        ok = batch.ok & ~late
        rows = np.flatnonzero(ok)
        keys = np.asarray(batch.keys.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)[rows]
        ts = batch.ts[rows]
        seq = rows + 1  # arrival order, as the engine's sequence numbers
        raw = {c: log.column(c).to_numpy(zero_copy_only=False)[rows] for c in self._layout.columns}
        order = np.lexsort((seq, ts, keys))
        keys, ts, seq = keys[order], ts[order], seq[order]
        raw = {c: v[order] for c, v in raw.items()}
        bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True]) if len(keys) else np.array([0])
        horizon = self._layout.horizon
        states: list[tuple[str, KeyState]] = []
        for a, b in itertools.pairwise(bounds):  # a loop per key, not per event
            max_ts = int(ts[a:b].max())
            start = a + int(np.searchsorted(ts[a:b], max_ts - horizon, side="left"))
            cols = [
                [float(v) for v in raw[c][start:b]] if numeric else raw[c][start:b].tolist()
                for c, numeric in zip(self._layout.columns, self._layout.numeric, strict=True)
            ]
            states.append(
                (str(keys[a]), KeyState(max_ts, horizon, ts[start:b].tolist(), seq[start:b].tolist(), cols))
            )
        stale: list[str] = []
        for i in range(0, len(states), _WRITE_CHUNK):
            chunk = states[i : i + _WRITE_CHUNK]
            result = self.store.write(
                self.namespace,
                {k: {STATE_FIELD: self._blob(k, st)} for k, st in chunk},
                event_time_ms={k: st.max_ts for k, st in chunk},
                ttl_s=ttl_s,
            )
            stale += result.stale
        return MaterializeReport(
            len(states), log.num_rows, int(late.sum()), int((~batch.ok).sum()), stale
        )  # fmt: skip

    def _blob(self, key: str, st: KeyState) -> bytes:
        return encode(self._layout, [(key, st)], kind="key", next_seq=max(st.seq, default=0) + 1)

    def write_entity_features(
        self, table: pa.Table, *, event_time_ms: int | None = None, ttl_s: float | None = None
    ) -> list[str]:
        """Write precomputed per-entity features (columns named like the feature set's entity features,
        keyed by the join key column), e.g. the output of a nightly batch job. Returns stale entities."""
        names = [n for n in self._entity_names if n in table.column_names]
        if self.key_column not in table.column_names or not names:
            raise InputError(
                f"the table needs the key column {self.key_column!r} and at least one entity feature "
                f"({', '.join(self._entity_names) or 'the feature set defines none'})"
            )
        when = int(time.time() * 1000) if event_time_ms is None else event_time_ms
        keys = [str(k) for k in table.column(self.key_column).to_pylist()]
        values = {n: table.column(n).to_pylist() for n in names}
        stale: list[str] = []
        for i in range(0, len(keys), _WRITE_CHUNK):
            rows = {
                keys[j]: {n: values[n][j] for n in names} for j in range(i, min(i + _WRITE_CHUNK, len(keys)))
            }
            stale += self.store.write(self.entity_namespace, rows, event_time_ms=when, ttl_s=ttl_s).stale
        return stale

    def update(self, event: Mapping[str, Any]) -> Scored | Late | Rejected:
        """Streaming + online: score one event against its key's stored state, fold it in, write it back
        (:meth:`update_many` of one event)."""
        [result] = self.update_many([event])
        return result

    def update_many(self, events: Sequence[Mapping[str, Any]]) -> list[Scored | Late | Rejected]:
        """Score ``events`` (in arrival order) against their keys' stored state, folding each in before the
        next is scored; then write back the state of every key an event was folded into. One store read
        for all the keys, one store write for the changed ones, each with the key's newest event time.

        One writer per key (a partition owner) keeps this exact; the store refuses an older state.

            >>> # online.update_many(poll_batch)   # -> [Scored | Late | Rejected, ...], in order
        """
        batch: list[tuple[str | None, Mapping[str, Any]]] = []
        keys: dict[str, None] = {}  # the keys to read, in order of first appearance
        for event in events:
            key = event.get(self.key_column)
            if key is None:
                batch.append((None, event))  # rejected with the engine's reason
                continue
            key = str(key)
            batch.append((key, event))
            if key:  # an empty key is rejected; the store would refuse it
                keys[key] = None
        if not keys:
            return [self._engine.process(e) for _, e in batch]
        wanted = list(keys)
        records = self.store.read(self.namespace, wanted, [STATE_FIELD])
        try:
            for key, record in zip(wanted, records, strict=True):
                self._load(key, record.values.get(STATE_FIELD) if record else None)
            results: list[Scored | Late | Rejected] = []
            changed: dict[str, None] = {}
            for key, event in batch:
                if key is None:
                    results.append(self._engine.process(event))
                    continue
                result = self._engine.process({**event, self.key_column: key})
                if isinstance(result, Scored):
                    changed[key] = None
                results.append(result)
            if changed:
                states = [(k, st) for k in changed if (st := self._engine.state(k)) is not None]
                self.store.write(
                    self.namespace,
                    {k: {STATE_FIELD: self._blob(k, st)} for k, st in states},
                    event_time_ms={k: st.max_ts for k, st in states},
                )
            return results
        finally:
            for key in wanted:
                self._forget(key)

    # -- reading -----------------------------------------------------------------------------------------
    def get(self, entities: Sequence[str], *, at_ms: int | None = None) -> list[dict[str, float] | None]:
        """The windowed and entity features of each entity as of ``at_ms`` (default: now): one store read
        for all entities (two when the feature set has entity features); ``None`` for an entity the store
        knows nothing of. Request features come with the request."""
        now = int(time.time() * 1000) if at_ms is None else at_ms
        keys = list(entities)
        records = self.store.read(self.namespace, keys, [STATE_FIELD])
        extra: list[Any] = [None] * len(keys)
        if self._entity_names:
            extra = self.store.read(self.entity_namespace, keys, self._entity_names)
        return self._rows(keys, records, extra, now)

    async def aget(
        self, store: AsyncOnlineStore, entities: Sequence[str], *, at_ms: int | None = None
    ) -> list[dict[str, float] | None]:
        """:meth:`get` through an async store (the online server's path)."""
        now = int(time.time() * 1000) if at_ms is None else at_ms
        keys = list(entities)
        records = await store.read(self.namespace, keys, [STATE_FIELD])
        extra: list[Any] = [None] * len(keys)
        if self._entity_names:
            extra = await store.read(self.entity_namespace, keys, self._entity_names)
        return self._rows(keys, records, extra, now)

    def empty(self, at_ms: int) -> dict[str, float]:
        """The features of an entity with no history: empty windows, entity features' defaults."""
        windowed = self._engine.read("", at_ms)
        return {f.name: windowed.get(f.name, f.default) for f in self.fs.features if f.name in windowed
                or f.name in self._entity_names}  # fmt: skip

    def _rows(
        self, keys: list[str], records: Sequence[Any], extra: Sequence[Any], now: int
    ) -> list[dict[str, float] | None]:
        out: list[dict[str, float] | None] = []
        for key, record, fixed in zip(keys, records, extra, strict=True):
            if record is None and fixed is None:
                out.append(None)
                continue
            if record is not None:
                self._load(key, record.values.get(STATE_FIELD), reuse=True)
            windowed = self._engine.read(key, now)
            self._forget(key)
            row: dict[str, float] = {}
            for f in self.fs.features:
                if f.name in windowed:
                    row[f.name] = windowed[f.name]
                elif f.name in self._entity_names:
                    v = fixed.values.get(f.name, f.default) if fixed is not None else f.default
                    row[f.name] = float(v) if isinstance(v, int | float) else math.nan
            out.append(row)
        return out

    def _load(self, key: str, blob: Any, *, reuse: bool = False) -> None:
        if not isinstance(blob, bytes):
            return
        if not reuse:
            self._engine.load_key(key, blob)
            return
        # Reads never change state, so a blob decoded once serves every read until the state is rewritten
        # (a new blob is a new cache key). Decoding is most of a read's CPU.
        st = self._decoded.get(blob)
        if st is None:
            self._engine.load_key(key, blob)
            st = self._engine.state(key)
            if st is not None:
                self._decoded[blob] = st
                if len(self._decoded) > _DECODED_CACHE:
                    self._decoded.popitem(last=False)
        else:
            self._decoded.move_to_end(blob)
            self._engine.put_state(key, st)

    def _forget(self, key: str) -> None:
        self._engine.drop_key(key)  # the engine is a scratch evaluator here: the store keeps the state
