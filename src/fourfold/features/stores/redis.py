"""The Redis online store: one hash per entity, pipelined reads, an atomic event-time rule in Lua.

    >>> store = RedisStore("redis://127.0.0.1:6379/0?socket_timeout=0.05&max_connections=20")
    >>> store.write("fraud", {"u1": {"amount_sum_1h": 12.5}}, event_time_ms=1_700_000_000_123, ttl_s=86400)
    WriteResult(written=1, stale=[])
    >>> store.read("fraud", ["u1", "u2"], ["amount_sum_1h"])
    [Record(values={'amount_sum_1h': 12.5}, event_time_ms=1700000000123, written_at_ms=...), None]

Layout: key ``ff:{namespace}:{entity}``, fields = feature names plus ``__et`` (event time, ms) and ``__wa``
(written at, ms); a float is stored as its exact ``repr``, str and bytes with a ``s:`` / ``b:`` tag.
A read of N entities is N ``HMGET`` (or ``HGETALL``) in one pipeline: one round trip.
A write is one pipeline of a Lua script per entity that compares ``__et`` and applies ``HSET`` and
``PEXPIRE`` (or ``PERSIST`` without a TTL) only if the new event time is not older: the check and the
update are atomic. URL query options (``socket_timeout``, ``max_connections``, ``timeout`` - the wait for
a free pooled connection - ...) go to redis-py's blocking pool. Redis Cluster is not supported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fourfold.extras import require
from fourfold.features.stores.base import (
    Fence,
    FencedError,
    InValue,
    Record,
    StoreError,
    StoreUnavailableError,
    StoreURLError,
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
    redact_url,
)
from fourfold.features.stores.resp import Multiplexed

if TYPE_CHECKING:
    import redis as redis_sync
    import redis.asyncio as redis_async

__all__ = ["AsyncRedisStore", "RedisStore"]

_PURPOSE = "the Redis feature store"
#: defaults for an online path: fail within about a second rather than hang; a URL query overrides them
DEFAULTS: dict[str, Any] = {
    "max_connections": 50,
    "timeout": 1.0,
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
}
_Entries = list[tuple[str, dict[str, Value], int]]
# KEYS[1] = entity hash; ARGV = event time, written at, ttl ms (0: none), field, value, field, value ...
_WRITE_LUA = """
local stored = redis.call('HGET', KEYS[1], '__et')
if stored and tonumber(stored) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], '__et', ARGV[1], '__wa', ARGV[2])
for i = 4, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) else redis.call('PERSIST', KEYS[1]) end
return 1
"""


def _key(namespace: str, entity: str) -> str:
    return f"ff:{namespace}:{entity}"


def _pool(module: str, parsers: tuple[str, str], url: str, options: Mapping[str, Any], hiredis: bool) -> Any:
    """A blocking connection pool for ``url``; ``module`` is ``redis`` or ``redis.asyncio``: one retry
    at once (a pooled connection may be stale after a server restart), then a clear error."""
    parser = getattr(require("redis._parsers", "redis", _PURPOSE), parsers[0] if hiredis else parsers[1])
    backoff = require("redis.backoff", "redis", _PURPOSE).NoBackoff()
    retry = require(f"{module}.retry", "redis", _PURPOSE).Retry(backoff, 1)
    try:
        pool = require(module, "redis", _PURPOSE).BlockingConnectionPool.from_url(
            url, parser_class=parser, retry=retry, **{**DEFAULTS, **options}
        )
    except ValueError as exc:
        raise StoreURLError(f"cannot use the Redis URL {redact_url(url)!r}: {exc}") from exc
    pool.connection_kwargs["decode_responses"] = False  # values are bytes: blobs must stay binary
    return pool


class _Common:
    """URL handling, error mapping and the encoding shared by the sync and async stores."""

    url: str
    hiredis: bool

    def _setup(self, url: str) -> Any:
        redis = require("redis", "redis", _PURPOSE)
        self.url = redact_url(url)
        self._unavailable: tuple[type[Exception], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._failed: type[Exception] = redis.exceptions.RedisError
        self._noscript: type[Exception] = redis.exceptions.NoScriptError
        self._watch: type[Exception] = redis.exceptions.WatchError
        self.hiredis = bool(require("redis.utils", "redis", _PURPOSE).HIREDIS_AVAILABLE)
        return redis

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._unavailable as exc:
            raise StoreUnavailableError(
                f"the Redis feature store at {self.url} is unavailable: {exc}"
            ) from exc
        except self._failed as exc:
            raise StoreError(f"the Redis feature store at {self.url} failed: {exc}") from exc

    @staticmethod
    def _queue_writes(pipe: Any, sha: str, namespace: str, entries: _Entries, ttl: int | None) -> None:
        # EVALSHA queued directly: passing the pipeline to the Script object would add a SCRIPT EXISTS
        # round trip to every write; a NOSCRIPT reply is handled by the caller (load, then retry once)
        now, ttl_arg = str(now_ms()), str(ttl or 0)
        for entity, values, et in entries:
            args: list[str | bytes] = [str(et), now, ttl_arg]
            for name, value in values.items():
                args += (name, encode_value(value))
            pipe.evalsha(sha, 1, _key(namespace, entity), *args)

    @staticmethod
    def _result(entries: _Entries, applied: list[Any]) -> WriteResult:
        stale = [entity for (entity, _, _), ok in zip(entries, applied, strict=True) if not ok]
        return WriteResult(len(entries) - len(stale), stale)

    @staticmethod
    def _queue_reads(
        pipe: Any, namespace: str, entities: Sequence[str], fields: Sequence[str] | None
    ) -> None:
        for entity in entities:
            if fields is None:
                pipe.hgetall(_key(namespace, entity))
            else:
                pipe.hmget(_key(namespace, entity), ["__et", "__wa", *fields])

    @staticmethod
    def _records(replies: list[Any], fields: Sequence[str] | None) -> list[Record | None]:
        out: list[Record | None] = []
        pairs: Iterable[tuple[Any, Any]]
        for reply in replies:
            if fields is None:
                et, wa = reply.pop(b"__et", None), reply.pop(b"__wa", None)
                pairs = ((k.decode("utf-8"), v) for k, v in reply.items())
            else:
                et, wa = reply[0], reply[1]
                pairs = zip(fields, reply[2:], strict=True)
            if et is None:
                out.append(None)
                continue
            values = {name: decode_value(data) for name, data in pairs if data is not None}
            out.append(Record(values, int(et), int(wa or 0)))
        return out


class RedisStore(_Common):
    """An :class:`~fourfold.features.stores.OnlineStore` on Redis through redis-py's sync client.

    ``options`` are connection-pool keyword arguments (a URL query option wins over them)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", **options: Any) -> None:
        redis = self._setup(url)
        self.pool: redis_sync.BlockingConnectionPool = _pool(
            "redis", ("_HiredisParser", "_RESP2Parser"), url, options, self.hiredis
        )
        self.client: redis_sync.Redis = redis.Redis(connection_pool=self.pool)
        self._script = self.client.register_script(_WRITE_LUA)
        self._loaded = False

    def write(
        self,
        namespace: str,
        rows: Mapping[str, Mapping[str, InValue]],
        *,
        event_time_ms: int | Mapping[str, int],
        ttl_s: float | None = None,
    ) -> WriteResult:
        entries, ttl_ms = prepare_write(namespace, rows, event_time_ms, ttl_s)
        if not entries:
            return WriteResult(0, [])
        with self._errors():
            try:
                return self._write(namespace, entries, ttl_ms)
            except self._noscript:  # a new or flushed server: load the script, then once more
                self.client.script_load(_WRITE_LUA)
                return self._write(namespace, entries, ttl_ms)

    def _write(self, namespace: str, entries: _Entries, ttl: int | None) -> WriteResult:
        with self.client.pipeline(transaction=False) as pipe:
            self._queue_writes(pipe, self._script.sha, namespace, entries, ttl)
            return self._result(entries, pipe.execute())

    def transact(
        self, writes: Sequence[Write], *, fences: Sequence[Fence] = (), ttl_s: float | None = None
    ) -> list[WriteResult]:
        """MULTI / EXEC over the writes' scripts; the fence is a WATCH on its hash, compared first."""
        prepared = [
            (w.namespace, *prepare_write(w.namespace, w.rows, w.event_time_ms, ttl_s)) for w in writes
        ]
        with self._errors():
            if not self._loaded:  # a NOSCRIPT inside EXEC would not undo the commands before it
                self.client.script_load(_WRITE_LUA)
                self._loaded = True
            try:
                return self._transact(prepared, fences)
            except self._noscript:  # the server was flushed since: every write here is idempotent
                self.client.script_load(_WRITE_LUA)
                return self._transact(prepared, fences)

    def _transact(
        self, prepared: list[tuple[str, _Entries, int | None]], fences: Sequence[Fence]
    ) -> list[WriteResult]:
        pipe: Any
        with self.client.pipeline(transaction=True) as pipe:
            if fences:
                keys = [_key(f.namespace, f.entity) for f in fences]
                pipe.watch(*keys)
                for fence, key in zip(fences, keys, strict=True):
                    raw = pipe.hget(key, fence.field)
                    held = None if raw is None else decode_value(bytes(raw))
                    check_fence(fence, held)
                pipe.multi()
            for namespace, entries, ttl_ms in prepared:
                self._queue_writes(pipe, self._script.sha, namespace, entries, ttl_ms)
            try:
                replies = pipe.execute()
            except self._watch:
                moved = ", ".join(f"{f.namespace}/{f.entity}/{f.field}" for f in fences)
                raise FencedError(f"the fence {moved} moved during the transaction") from None
        results: list[WriteResult] = []
        start = 0
        for _, entries, _ in prepared:
            results.append(self._result(entries, replies[start : start + len(entries)]))
            start += len(entries)
        return results

    def read(
        self, namespace: str, entities: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[Record | None]:
        check_namespace(namespace)
        check_entities(entities)
        check_fields(fields)
        if not entities:
            return []
        with self._errors(), self.client.pipeline(transaction=False) as pipe:
            self._queue_reads(pipe, namespace, entities, fields)
            replies = pipe.execute()
        return self._records(replies, fields)

    def delete(self, namespace: str, entities: Sequence[str]) -> int:
        check_namespace(namespace)
        check_entities(entities)
        if not entities:
            return 0
        with self._errors():
            return int(self.client.unlink(*(_key(namespace, e) for e in dict.fromkeys(entities))))

    def close(self) -> None:
        self.client.close()
        self.pool.disconnect()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRedisStore(_Common):
    """An :class:`~fourfold.features.stores.AsyncOnlineStore` on ``redis.asyncio``; create, use and close
    it within one event loop."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", **options: Any) -> None:
        self._setup(url)
        aredis = require("redis.asyncio", "redis", _PURPOSE)
        self.pool: redis_async.BlockingConnectionPool = _pool(
            "redis.asyncio", ("_AsyncHiredisParser", "_AsyncRESP2Parser"), url, options, self.hiredis
        )
        self.client: redis_async.Redis = aredis.Redis(connection_pool=self.pool)
        self._script = self.client.register_script(_WRITE_LUA)
        self._fast: Multiplexed | None = None
        kw = self.pool.connection_kwargs
        if self.pool.connection_class.__name__ == "Connection" and self.hiredis:  # plain TCP
            self._fast = Multiplexed(
                kw.get("host", "127.0.0.1"), int(kw.get("port", 6379)), db=int(kw.get("db", 0) or 0),
                username=kw.get("username"), password=kw.get("password"),
                connect_timeout=float(kw.get("socket_connect_timeout") or 1.0),
            )  # fmt: skip

    async def write(
        self,
        namespace: str,
        rows: Mapping[str, Mapping[str, InValue]],
        *,
        event_time_ms: int | Mapping[str, int],
        ttl_s: float | None = None,
    ) -> WriteResult:
        entries, ttl_ms = prepare_write(namespace, rows, event_time_ms, ttl_s)
        if not entries:
            return WriteResult(0, [])
        with self._errors():
            try:
                return await self._write(namespace, entries, ttl_ms)
            except self._noscript:  # a new or flushed server: load the script, then once more
                await self.client.script_load(_WRITE_LUA)
                return await self._write(namespace, entries, ttl_ms)

    async def _write(self, namespace: str, entries: _Entries, ttl: int | None) -> WriteResult:
        async with self.client.pipeline(transaction=False) as pipe:
            self._queue_writes(pipe, self._script.sha, namespace, entries, ttl)
            return self._result(entries, await pipe.execute())

    async def read(
        self, namespace: str, entities: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[Record | None]:
        check_namespace(namespace)
        check_entities(entities)
        check_fields(fields)
        if not entities:
            return []
        with self._errors():
            if len(entities) == 1 and fields is not None and self._fast is not None:  # the online hot path
                try:
                    replies = [
                        await self._fast.call("HMGET", _key(namespace, entities[0]), "__et", "__wa", *fields)
                    ]
                except (OSError, ConnectionError) as exc:
                    raise StoreUnavailableError(
                        f"the Redis feature store at {self.url} is unavailable: {exc}"
                    ) from exc
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    self._queue_reads(pipe, namespace, entities, fields)
                    replies = await pipe.execute()
        return self._records(replies, fields)

    async def delete(self, namespace: str, entities: Sequence[str]) -> int:
        check_namespace(namespace)
        check_entities(entities)
        if not entities:
            return 0
        with self._errors():
            return int(await self.client.unlink(*(_key(namespace, e) for e in dict.fromkeys(entities))))

    async def close(self) -> None:
        if self._fast is not None:
            await self._fast.close()
        await self.client.aclose()
        await self.pool.disconnect()

    async def __aenter__(self) -> AsyncRedisStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
