"""What only the Redis store has: its key layout, server-side TTL, pipelining, the pool, the async client,
and what happens when the server is down."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.connection
import redis.connection

from fourfold.errors import MissingExtraError
from fourfold.features.stores import (
    AsyncRedisStore,
    RedisStore,
    StoreError,
    StoreUnavailableError,
    StoreURLError,
    open_async_store,
    open_store,
)
from serving import wait_until

T0 = 1_700_000_000_000
StartRedis = Callable[..., AbstractContextManager[int]]


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def rstore(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url)
    yield store
    store.close()


def test_one_hash_per_entity_with_server_side_ttl(
    rstore: RedisStore, raw: redis.Redis, namespace: str
) -> None:
    rstore.write(namespace, {"u1": {"x": 0.1, "s": "a", "b": b"\x00"}}, event_time_ms=T0 + 7, ttl_s=0.2)
    rstore.write(namespace, {"u2": {"x": 1}}, event_time_ms=T0)
    key = f"ff:{namespace}:u1"
    stored = raw.hgetall(key)
    assert stored[b"__et"] == str(T0 + 7).encode()
    assert int(stored[b"__wa"]) >= T0
    assert (stored[b"x"], stored[b"s"], stored[b"b"]) == (b"0.1", b"s:a", b"b:\x00")
    assert 0 < raw.pttl(key) <= 200
    assert raw.pttl(f"ff:{namespace}:u2") == -1  # no TTL: kept until deleted
    wait_until(lambda: raw.exists(key) == 0, what=f"Redis to expire {key}")  # by itself, not only hidden
    assert rstore.read(namespace, ["u1"]) == [None]
    assert raw.exists(f"ff:{namespace}:u2") == 1


def _trace(monkeypatch: pytest.MonkeyPatch, connection: Any) -> list[str]:
    """Records each packet sent and each reply read on ``connection`` (a redis-py connection class)."""
    events: list[str] = []

    def wrap(method: str, event: str) -> None:
        original = getattr(connection, method)

        def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
            events.append(event)
            return original(self, *args, **kwargs)  # a coroutine for the async connection

        monkeypatch.setattr(connection, method, traced)

    wrap("send_packed_command", "send")
    wrap("read_response", "read")
    return events


def _hmget_calls(raw: redis.Redis) -> int:
    return int(raw.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


def test_reading_100_entities_is_one_round_trip(
    rstore: RedisStore, raw: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entities = [f"u{i:03d}" for i in range(100)]
    rows = {e: {f"f{j}": float(j) for j in range(10)} for e in entities[::2]}
    rstore.write(namespace, rows, event_time_ms=T0)  # also warms a pooled connection
    before = _hmget_calls(raw)
    events = _trace(monkeypatch, redis.connection.AbstractConnection)
    records = rstore.read(namespace, entities, [f"f{j}" for j in range(10)])
    monkeypatch.undo()
    assert events == ["send"] + ["read"] * 100  # every command leaves in one packet before any reply
    assert _hmget_calls(raw) - before == 100
    assert [r is not None for r in records] == [i % 2 == 0 for i in range(100)]
    events = _trace(monkeypatch, redis.connection.AbstractConnection)
    assert rstore.write(namespace, rows, event_time_ms=T0).written == 50
    assert events == ["send"] + ["read"] * 50  # a write is one round trip too (no SCRIPT EXISTS)


def test_async_client_pipelines_and_shares_a_pool(
    redis_url: str, raw: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        store = open_async_store(redis_url + "?max_connections=4")
        assert isinstance(store, AsyncRedisStore)
        try:
            rows = {f"u{i}": {"x": float(i)} for i in range(100)}
            assert (await store.write(namespace, rows, event_time_ms=T0)).written == 100
            events = _trace(monkeypatch, redis.asyncio.connection.AbstractConnection)
            records = await store.read(namespace, list(rows), ["x"])
            monkeypatch.undo()
            assert events == ["send"] + ["read"] * 100
            assert [r.values["x"] for r in records if r] == [float(i) for i in range(100)]
            many = await asyncio.gather(*(store.read(namespace, [f"u{i}"]) for i in range(50)))
            assert [m[0].values["x"] for m in many if m[0]] == [float(i) for i in range(50)]
            assert store.pool.max_connections == 4
        finally:
            await store.close()

    asyncio.run(main())


def test_pool_and_options_come_from_the_url(redis_url: str, raw: redis.Redis, namespace: str) -> None:
    name = f"ff{uuid.uuid4().hex[:8]}"
    store = RedisStore(f"{redis_url}?max_connections=2&socket_timeout=0.05&client_name={name}")
    try:
        kwargs = store.pool.connection_kwargs
        assert (store.pool.max_connections, kwargs["socket_timeout"]) == (2, 0.05)
        assert store.hiredis
        assert kwargs["parser_class"].__name__ == "_HiredisParser"
        store.write(namespace, {"u1": {"x": 1.0}}, event_time_ms=T0)

        def work() -> None:
            for _ in range(100):
                assert store.read(namespace, ["u1"])[0] is not None

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        clients = [c for c in raw.client_list() if c["name"] == name]
        assert 1 <= len(clients) <= 2  # 8 threads shared at most 2 connections
    finally:
        store.close()


def test_socket_timeout_gives_a_fast_clear_error(start_redis: StartRedis, namespace: str) -> None:
    with start_redis() as port, redis.Redis(port=port) as admin:
        store = open_store(f"redis://127.0.0.1:{port}/0?socket_timeout=0.05")
        try:
            store.write(namespace, {"u1": {"x": 1.0}}, event_time_ms=T0)
            admin.client_pause(500)  # the server stops answering clients for 0.5 s
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="unavailable"):
                store.read(namespace, ["u1"])
            assert time.monotonic() - started < 0.4  # one retry, no backoff
        finally:
            store.close()


def test_server_stopped_mid_test(start_redis: StartRedis, namespace: str) -> None:
    password = "s3cret-pw"
    with start_redis(password=password) as port:
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        store = open_store(url)
        astore = open_async_store(url)
        store.write(namespace, {"u1": {"x": 1.0}}, event_time_ms=T0)
        assert store.read(namespace, ["u1"])[0] is not None
    try:  # the server is gone now
        for call in (
            lambda: store.read(namespace, ["u1"]),
            lambda: store.write(namespace, {"u1": {"x": 2.0}}, event_time_ms=T0 + 1),
            lambda: store.delete(namespace, ["u1"]),
            lambda: asyncio.run(astore.read(namespace, ["u1"])),
        ):
            with pytest.raises(StoreUnavailableError) as info:
                call()
            err = info.value
            assert err.status == 503
            assert f"redis://:***@127.0.0.1:{port}/0 is unavailable" in err.message
            assert password not in str(err)
            assert password not in repr(err.to_dict())
    finally:
        store.close()
        asyncio.run(astore.close())


def test_no_server_at_all(namespace: str, unused_port: int) -> None:
    store = open_store(f"redis://127.0.0.1:{unused_port}/0")
    try:
        with pytest.raises(StoreUnavailableError, match=r"Redis feature store at redis://127\.0\.0\.1"):
            store.read(namespace, ["u1"])
    finally:
        store.close()


def test_unix_socket(start_redis: StartRedis, tmp_path: Path, namespace: str) -> None:
    sock = tmp_path / "r.sock"
    with start_redis(unixsocket=sock):
        store = open_store(f"unix://{sock}?db=1")
        try:
            store.write(namespace, {"u1": {"x": 1.5}}, event_time_ms=T0)
            assert [r.values for r in store.read(namespace, ["u1"]) if r] == [{"x": 1.5}]
        finally:
            store.close()


def test_a_foreign_key_is_a_store_error(rstore: RedisStore, raw: redis.Redis, namespace: str) -> None:
    raw.set(f"ff:{namespace}:u1", "not a hash")
    with pytest.raises(StoreError, match="WRONGTYPE") as info:
        rstore.read(namespace, ["u1"])
    assert info.value.status == 500


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h/0?socket_timeout=soon", "'redis://:***@h/0?socket_timeout=soon'"),
        (
            "unix:///r.sock?password=pw&socket_timeout=soon",
            "'unix:///r.sock?password=***&socket_timeout=soon'",
        ),
    ],
)
def test_bad_url_option(url: str, shown: str) -> None:
    with pytest.raises(StoreURLError, match="cannot use the Redis URL") as info:
        open_store(url)
    assert info.value.status == 400
    assert shown in info.value.message
    assert "pw" not in info.value.message.replace("password", "")


def test_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'fourfold\[redis\]'"):
        open_store("redis://127.0.0.1:6379/0")
