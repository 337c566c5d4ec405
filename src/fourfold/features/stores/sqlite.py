"""The embedded online store that survives a restart: one SQLite file in WAL mode.

    >>> store = SQLiteStore(":memory:")          # or open_store("sqlite:////var/lib/fourfold/online.db")
    >>> store.write("fraud", {"u1": {"n": 3}}, event_time_ms=1_000)
    WriteResult(written=1, stale=[])
    >>> store.read("fraud", ["u1", "u2"])
    [Record(values={'n': 3.0}, event_time_ms=1000, written_at_ms=...), None]

Two tables: ``ff_entities`` (one row per entity: event time, write time, expiry) and ``ff_values`` (one
row per field; the value encoded by :func:`~fourfold.features.stores.base.encode_value`, so floats, NaN
included, read back exactly). A write is one ``BEGIN IMMEDIATE`` transaction (the event-time check and
the update are atomic, also across processes; a crash leaves the old values); a read of many entities is
one query (``IN`` lists of at most 900 ids). One connection, guarded by a lock, serves all threads.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from fourfold.features.stores.base import (
    Fence,
    InValue,
    Record,
    StoreError,
    StoreUnavailableError,
    Value,
    Write,
    WriteResult,
    check_entities,
    check_fence,
    check_fields,
    check_namespace,
    decode_value,
    encode_value,
    now_ms,
    prepare_write,
)

__all__ = ["SQLiteStore"]

_CHUNK = 900  # ids per IN (...) list: below SQLite's 999 host-parameter limit of older builds
_FIELDS_INLINE = 400  # more requested fields than this are filtered in Python instead
_SWEEP_EVERY_MS = 60_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ff_entities (
    namespace TEXT NOT NULL, entity TEXT NOT NULL, event_time_ms INTEGER NOT NULL,
    written_at_ms INTEGER NOT NULL, expires_at_ms INTEGER, PRIMARY KEY (namespace, entity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ff_values (
    namespace TEXT NOT NULL, entity TEXT NOT NULL, field TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (namespace, entity, field)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ff_entities_expiry ON ff_entities (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
"""
_LIVE = "(expires_at_ms IS NULL OR expires_at_ms > ?)"


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SQLiteStore:
    """An :class:`~fourfold.features.stores.OnlineStore` in a SQLite file (or ``":memory:"``).

    ``timeout_s``: how long a write waits for another process's lock. ``clock`` gives "now" in ms since
    the epoch: write times, expiry, reads, deletes and sweeps all read it (the wall clock unless given;
    tests pass a fake one to run TTLs out without waiting). Processes sharing a file should share a clock.
    """

    def __init__(
        self, path: str | Path = ":memory:", *, timeout_s: float = 5.0, clock: Callable[[], int] = now_ms
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._last_sweep = clock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are begun explicitly (BEGIN IMMEDIATE) where they are needed
            self._conn = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"cannot open the SQLite feature store {self.path!r}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:  # locked, disk full, unreadable file
            raise StoreUnavailableError(f"the SQLite feature store {self.path!r} failed: {exc}") from exc
        except sqlite3.ProgrammingError as exc:
            if "closed" in str(exc):
                raise StoreError(f"the SQLite feature store {self.path!r} is closed") from exc
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"the SQLite feature store {self.path!r} failed: {exc}") from exc

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
        if not fences and not any(entries for _, entries, _ in prepared):
            return [WriteResult(0, []) for _ in prepared]
        now = self._clock()
        with self._transaction() as conn:
            for fence in fences:
                row = conn.execute(
                    "SELECT v.value FROM ff_entities AS e JOIN ff_values AS v "
                    "ON v.namespace = e.namespace AND v.entity = e.entity "
                    f"WHERE e.namespace = ? AND e.entity = ? AND v.field = ? AND {_LIVE}",
                    (fence.namespace, fence.entity, fence.field, now),
                ).fetchone()
                held = None if row is None else decode_value(row[0])
                check_fence(fence, held)
            results = [
                self._write(conn, namespace, entries, ttl_ms, now) for namespace, entries, ttl_ms in prepared
            ]
            if now - self._last_sweep > _SWEEP_EVERY_MS:
                self._sweep(conn, now)
        return results

    @staticmethod
    def _write(
        conn: sqlite3.Connection,
        namespace: str,
        entries: list[tuple[str, dict[str, Value], int]],
        ttl_ms: int | None,
        now: int,
    ) -> WriteResult:
        expires = None if ttl_ms is None else now + ttl_ms
        stale: list[str] = []
        stored: dict[str, tuple[int, int | None]] = {}
        for chunk in _chunks([e for e, _, _ in entries]):
            sql = (
                "SELECT entity, event_time_ms, expires_at_ms FROM ff_entities "
                f"WHERE namespace = ? AND entity IN ({_marks(len(chunk))})"
            )
            stored.update((e, (et, ex)) for e, et, ex in conn.execute(sql, (namespace, *chunk)))
        heads: list[tuple[str, str, int, int, int | None]] = []
        cells: list[tuple[str, str, str, bytes]] = []
        expired: list[tuple[str, str]] = []
        for entity, values, et in entries:
            old = stored.get(entity)
            if old is not None and old[1] is not None and old[1] <= now:
                expired.append((namespace, entity))  # an expired entity starts afresh: no merge
            elif old is not None and et < old[0]:
                stale.append(entity)
                continue
            heads.append((namespace, entity, et, now, expires))
            cells.extend((namespace, entity, f, encode_value(v)) for f, v in values.items())
        conn.executemany("DELETE FROM ff_values WHERE namespace = ? AND entity = ?", expired)
        # an upsert changes the row in place (INSERT OR REPLACE deletes and inserts: 15 % slower)
        conn.executemany(
            "INSERT INTO ff_entities VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, entity) DO UPDATE SET "
            "event_time_ms = excluded.event_time_ms, written_at_ms = excluded.written_at_ms, "
            "expires_at_ms = excluded.expires_at_ms",
            heads,
        )
        conn.executemany(
            "INSERT INTO ff_values VALUES (?, ?, ?, ?) "
            "ON CONFLICT (namespace, entity, field) DO UPDATE SET value = excluded.value",
            cells,
        )
        return WriteResult(len(entries) - len(stale), stale)

    def read(
        self, namespace: str, entities: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[Record | None]:
        check_namespace(namespace)
        check_entities(entities)
        check_fields(fields)
        inline = fields is not None and len(fields) <= _FIELDS_INLINE
        field_sql = f" AND v.field IN ({_marks(len(fields))})" if inline and fields else ""
        if inline and not fields:
            field_sql = " AND 0"  # no fields asked: only whether the entity exists, and its times
        field_args = tuple(fields) if inline and fields else ()
        now = self._clock()
        found: dict[str, tuple[int, int, dict[str, Value]]] = {}
        size = _CHUNK - len(field_args)
        with self._lock, self._errors():
            for chunk in _chunks(list(dict.fromkeys(entities)), size):
                sql = (
                    "SELECT e.entity, e.event_time_ms, e.written_at_ms, v.field, v.value "
                    "FROM ff_entities AS e LEFT JOIN ff_values AS v "
                    f"ON v.namespace = e.namespace AND v.entity = e.entity{field_sql} "
                    f"WHERE e.namespace = ? AND e.entity IN ({_marks(len(chunk))}) AND {_LIVE}"
                )
                for entity, et, wa, name, data in self._conn.execute(
                    sql, (*field_args, namespace, *chunk, now)
                ):
                    values = found.setdefault(entity, (et, wa, {}))[2]
                    if name is not None:
                        values[name] = decode_value(data)
        out: list[Record | None] = []
        for entity in entities:
            hit = found.get(entity)
            if hit is None:
                out.append(None)
                continue
            et, wa, values = hit
            if fields is not None:
                values = {f: values[f] for f in fields if f in values}
            out.append(Record(values, et, wa))
        return out

    def delete(self, namespace: str, entities: Sequence[str]) -> int:
        check_namespace(namespace)
        check_entities(entities)
        now = self._clock()
        removed = 0
        with self._transaction() as conn:
            for chunk in _chunks(list(dict.fromkeys(entities))):
                where = f"namespace = ? AND entity IN ({_marks(len(chunk))})"
                removed += conn.execute(
                    f"DELETE FROM ff_entities WHERE {where} AND {_LIVE}", (namespace, *chunk, now)
                ).rowcount
                conn.execute(f"DELETE FROM ff_entities WHERE {where}", (namespace, *chunk))
                conn.execute(f"DELETE FROM ff_values WHERE {where}", (namespace, *chunk))
        return removed

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _sweep(self, conn: sqlite3.Connection, now: int) -> None:
        conn.execute(
            "DELETE FROM ff_values WHERE (namespace, entity) IN "
            "(SELECT namespace, entity FROM ff_entities WHERE expires_at_ms <= ?)",
            (now,),
        )
        conn.execute("DELETE FROM ff_entities WHERE expires_at_ms <= ?", (now,))
        self._last_sweep = now

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
