"""The in-process online store: dicts behind a lock, for one process (tests, notebooks, embedded use).

    >>> store = MemoryStore()
    >>> store.write("fraud", {"u1": {"n": 3, "tier": "gold"}}, event_time_ms=1_000, ttl_s=3600)
    WriteResult(written=1, stale=[])
    >>> store.read("fraud", ["u1"], ["n"])[0].values
    {'n': 3.0}

Expired entities read as ``None`` and are purged when next touched, and by a sweep at most once a minute.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fourfold.features.stores.base import (
    Fence,
    InValue,
    Record,
    Value,
    Write,
    WriteResult,
    check_entities,
    check_fence,
    check_fields,
    check_namespace,
    now_ms,
    prepare_write,
)

__all__ = ["MemoryStore"]

_SWEEP_EVERY_MS = 60_000


@dataclass(slots=True)
class _Entry:
    values: dict[str, Value]
    event_time_ms: int
    written_at_ms: int
    expires_at_ms: int | None

    def live(self, now: int) -> bool:
        return self.expires_at_ms is None or self.expires_at_ms > now


class MemoryStore:
    """An :class:`~fourfold.features.stores.OnlineStore` in this process's memory; thread-safe.

    ``clock`` gives "now" in ms since the epoch: write times, expiry, reads, deletes and sweeps all read
    it (the wall clock unless given; tests pass a fake one to run TTLs out without waiting).
    """

    def __init__(self, *, clock: Callable[[], int] = now_ms) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, _Entry]] = {}
        self._last_sweep = clock()

    def write(
        self,
        namespace: str,
        rows: Mapping[str, Mapping[str, InValue]],
        *,
        event_time_ms: int | Mapping[str, int],
        ttl_s: float | None = None,
    ) -> WriteResult:
        return self.transact([Write(namespace, rows, event_time_ms)], ttl_s=ttl_s)[0]

    def transact(
        self, writes: Sequence[Write], *, fences: Sequence[Fence] = (), ttl_s: float | None = None
    ) -> list[WriteResult]:
        prepared = [
            (w.namespace, *prepare_write(w.namespace, w.rows, w.event_time_ms, ttl_s)) for w in writes
        ]
        now = self._clock()
        results: list[WriteResult] = []
        with self._lock:
            for fence in fences:
                entry = self._data.get(fence.namespace, {}).get(fence.entity)
                held = entry.values.get(fence.field) if entry is not None and entry.live(now) else None
                check_fence(fence, held)
            for namespace, entries, ttl_ms in prepared:
                expires = None if ttl_ms is None else now + ttl_ms
                stale: list[str] = []
                table = self._data.setdefault(namespace, {})
                for entity, values, et in entries:
                    old = table.get(entity)
                    if old is None or not old.live(now):
                        table[entity] = _Entry(values, et, now, expires)
                    elif et < old.event_time_ms:
                        stale.append(entity)
                    else:
                        old.values.update(values)
                        old.event_time_ms, old.written_at_ms, old.expires_at_ms = et, now, expires
                results.append(WriteResult(len(entries) - len(stale), stale))
            if now - self._last_sweep > _SWEEP_EVERY_MS:
                self._sweep(now)
        return results

    def read(
        self, namespace: str, entities: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[Record | None]:
        check_namespace(namespace)
        check_entities(entities)
        check_fields(fields)
        now = self._clock()
        out: list[Record | None] = []
        with self._lock:
            table = self._data.get(namespace, {})
            for entity in entities:
                entry = table.get(entity)
                if entry is None or not entry.live(now):
                    out.append(None)
                    continue
                stored = entry.values
                values = dict(stored) if fields is None else {f: stored[f] for f in fields if f in stored}
                out.append(Record(values, entry.event_time_ms, entry.written_at_ms))
        return out

    def delete(self, namespace: str, entities: Sequence[str]) -> int:
        check_namespace(namespace)
        check_entities(entities)
        now = self._clock()
        removed = 0
        with self._lock:
            table = self._data.get(namespace, {})
            for entity in dict.fromkeys(entities):
                entry = table.pop(entity, None)
                removed += entry is not None and entry.live(now)
        return removed

    def close(self) -> None:
        """Nothing to release; the data stays readable until the store is garbage-collected."""

    def _sweep(self, now: int) -> None:
        for table in self._data.values():
            for entity in [e for e, entry in table.items() if not entry.live(now)]:
                del table[entity]
        self._last_sweep = now

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
