"""Online feature stores: one small protocol, three backends, chosen by URL.

    >>> from fourfold.features.stores import open_store
    >>> with open_store("sqlite:////tmp/fourfold-online.db") as store:     # or memory://, redis://host:6379/0
    ...     store.write("fraud", {"u000042": {"txn_count_10m": 3}}, event_time_ms=1_700_000_000_123)
    ...     [record] = store.read("fraud", ["u000042"])
    WriteResult(written=1, stale=[])
    >>> record.values, record.event_time_ms
    ({'txn_count_10m': 3.0}, 1700000000123)

URLs:

* ``memory://`` - in this process (:class:`MemoryStore`);
* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite://:memory:`` - one SQLite
  file (:class:`SQLiteStore`), the SQLAlchemy convention: three slashes then the path;
* ``redis://[:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path/redis.sock?db=0`` - Redis
  (:class:`RedisStore`; needs ``pip install 'fourfold[redis]'``), pool and socket options in the query,
  e.g. ``?socket_timeout=0.05&max_connections=20``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fourfold.features.stores.base import (
    SCHEMES,
    AsyncOnlineStore,
    Fence,
    FencedError,
    InValue,
    OnlineStore,
    Record,
    StoreError,
    StoreInputError,
    StoreUnavailableError,
    StoreURLError,
    Value,
    Write,
    WriteResult,
    redact_url,
)
from fourfold.features.stores.memory import MemoryStore
from fourfold.features.stores.redis import AsyncRedisStore, RedisStore
from fourfold.features.stores.sqlite import SQLiteStore

__all__ = [
    "AsyncAdapter",
    "AsyncOnlineStore",
    "AsyncRedisStore",
    "Fence",
    "FencedError",
    "InValue",
    "MemoryStore",
    "OnlineStore",
    "Record",
    "RedisStore",
    "SQLiteStore",
    "StoreError",
    "StoreInputError",
    "StoreURLError",
    "StoreUnavailableError",
    "Value",
    "Write",
    "WriteResult",
    "open_async_store",
    "open_store",
]

_REDIS = ("redis", "rediss", "unix")


_T = TypeVar("_T")


class AsyncAdapter:
    """An :class:`AsyncOnlineStore` over a sync store; ``offload=True`` runs each call in a thread so
    that a blocking backend (SQLite) never blocks the event loop."""

    def __init__(self, store: OnlineStore, *, offload: bool) -> None:
        self.store = store
        self._offload = offload

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if self._offload:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    async def write(
        self,
        namespace: str,
        rows: Mapping[str, Mapping[str, InValue]],
        *,
        event_time_ms: int | Mapping[str, int],
        ttl_s: float | None = None,
    ) -> WriteResult:
        return await self._call(self.store.write, namespace, rows, event_time_ms=event_time_ms, ttl_s=ttl_s)

    async def read(
        self, namespace: str, entities: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[Record | None]:
        return await self._call(self.store.read, namespace, entities, fields)

    async def delete(self, namespace: str, entities: Sequence[str]) -> int:
        return await self._call(self.store.delete, namespace, entities)

    async def close(self) -> None:
        await self._call(self.store.close)

    async def __aenter__(self) -> AsyncAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in ("memory", "sqlite", *_REDIS):
        raise StoreURLError(
            f"unsupported feature store URL {redact_url(url)!r}: use one of {', '.join(SCHEMES)}"
        )
    return scheme.lower()


def _sqlite_path(url: str) -> str:
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if rest in ("", ":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise StoreURLError(
            f"cannot read the SQLite URL {url!r}: write sqlite:///relative.db, sqlite:////abs/path.db "
            "or sqlite://:memory:"
        )
    return rest[1:]


def open_store(url: str, **options: Any) -> OnlineStore:
    """The :class:`OnlineStore` for ``url`` (``options`` go to the Redis connection pool).

    >>> open_store("memory://")
    <fourfold.features.stores.memory.MemoryStore object at ...>
    """
    scheme = _scheme(url)
    if options and scheme not in _REDIS:
        raise StoreURLError(f"options {sorted(options)} apply to Redis stores only, not to {scheme}://")
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        return SQLiteStore(_sqlite_path(url))
    return RedisStore(url, **options)


def open_async_store(url: str, **options: Any) -> AsyncOnlineStore:
    """The :class:`AsyncOnlineStore` for ``url``: native ``redis.asyncio`` for Redis; SQLite calls run in
    a worker thread; memory calls run inline (they never block). Open and close it in one event loop."""
    scheme = _scheme(url)
    if scheme in _REDIS:
        return AsyncRedisStore(url, **options)
    return AsyncAdapter(open_store(url), offload=scheme == "sqlite")
