"""One contract, every backend: memory, SQLite (a real file) and Redis (a real server)."""

from __future__ import annotations

import asyncio
import math
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourfold.errors import FourfoldError
from fourfold.features.stores import (
    AsyncOnlineStore,
    Fence,
    FencedError,
    InValue,
    OnlineStore,
    Record,
    StoreInputError,
    StoreUnavailableError,
    StoreURLError,
    Write,
    WriteResult,
    open_async_store,
    open_store,
)

T0 = 1_700_000_000_000  # a whole second, in ms
BLOB = bytes(range(256)) * 4096  # 1 MiB holding every byte value


def one(store: OnlineStore, namespace: str, entity: str, fields: list[str] | None = None) -> Record:
    [record] = store.read(namespace, [entity], fields)
    assert record is not None, entity
    return record


def test_floats_round_trip_exactly(store: OnlineStore, namespace: str) -> None:
    values: dict[str, InValue] = {"nan": math.nan, "neg_zero": -0.0, "tiny": 1e-300, "subnormal": 5e-324}
    values |= {"third": 1 / 3, "inf": -math.inf, "big_int": 2**62 + 1, "int": 7, "flag": True}
    assert store.write(namespace, {"u1": values}, event_time_ms=T0) == WriteResult(1, [])
    got = one(store, namespace, "u1").values
    assert {k: repr(v) for k, v in got.items()} == {k: repr(float(v)) for k, v in values.items()}
    assert all(type(v) is float for v in got.values())


def test_bytes_and_str_round_trip(store: OnlineStore, namespace: str) -> None:
    values: dict[str, bytes | str] = {
        "blob": BLOB,
        "empty_bytes": b"",
        "tagged_bytes": b"s:not a str",
        "text": "naïve ✓ 𝄞",
        "looks_like_float": "1.5",
        "tagged_text": "b:not bytes",
        "empty_text": "",
    }
    store.write(namespace, {"u1": values}, event_time_ms=T0)
    got = one(store, namespace, "u1").values
    assert got == values
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in values.items()}


def test_many_entities_in_one_read(store: OnlineStore, namespace: str) -> None:
    rows: dict[str, dict[str, InValue]] = {
        f"u{i:06d}": {"x": float(i), "tier": f"t{i % 3}"} for i in range(2000)
    }
    assert store.write(namespace, rows, event_time_ms=T0).written == 2000  # > 900 ids: chunked in SQLite
    asked = ["u000005", "nobody", "u001999", "u000005", "u:with:colons", *rows]
    records = store.read(namespace, asked, ["x"])
    assert records[1] is None
    assert records[4] is None
    first = records[0]
    assert first is not None
    assert records[3] == first == Record({"x": 5.0}, T0, first.written_at_ms)
    assert [r.values["x"] if r else None for r in records[5:]] == [float(i) for i in range(2000)]
    assert store.read(namespace, []) == []


def test_fields_subset_and_all(store: OnlineStore, namespace: str) -> None:
    store.write(namespace, {"u1": {"a": 1.0, "b": "two", "c": b"3"}}, event_time_ms=T0)
    assert one(store, namespace, "u1", ["c", "a", "missing"]).values == {"c": b"3", "a": 1.0}
    assert list(one(store, namespace, "u1", ["c", "a"]).values) == ["c", "a"]  # in the order asked
    assert one(store, namespace, "u1").values == {"a": 1.0, "b": "two", "c": b"3"}
    known = one(store, namespace, "u1", [])  # no fields: the entity's freshness only
    many = [f"g{i}" for i in range(500)] + ["b"]  # more than SQLite inlines: filtered after the query
    assert one(store, namespace, "u1", many).values == {"b": "two"}
    assert (known.values, known.event_time_ms) == ({}, T0)


def test_write_merges_fields(store: OnlineStore, namespace: str) -> None:
    store.write(namespace, {"u1": {"a": 1.0, "b": 2.0}}, event_time_ms=T0)
    store.write(namespace, {"u1": {"b": 20.0, "c": 30.0}}, event_time_ms=T0 + 5)
    record = one(store, namespace, "u1")
    assert record.values == {"a": 1.0, "b": 20.0, "c": 30.0}
    assert record.event_time_ms == T0 + 5


def test_older_event_time_is_stale_and_not_applied(store: OnlineStore, namespace: str) -> None:
    store.write(namespace, {"u1": {"a": 1.0}, "u2": {"a": 1.0}}, event_time_ms=T0 + 10)
    before = one(store, namespace, "u1")
    result = store.write(
        namespace,
        {"u1": {"a": 2.0, "b": 2.0}, "u2": {"a": 3.0}, "u3": {"a": 4.0}},
        event_time_ms={"u1": T0 + 9, "u2": T0 + 10, "u3": 0},
    )
    assert result == WriteResult(written=2, stale=["u1"])
    assert one(store, namespace, "u1") == before  # untouched: values, event time and write time
    assert one(store, namespace, "u2").values == {"a": 3.0}  # equal event time: last write wins
    assert one(store, namespace, "u3").event_time_ms == 0


def test_updates_within_one_second_and_one_millisecond_all_land(store: OnlineStore, namespace: str) -> None:
    # Feast's Redis store keeps whole seconds and drops the second update here; fourfold keeps ms.
    for i, t in enumerate([T0 + 100, T0 + 900, T0 + 900, T0 + 901]):
        assert store.write(namespace, {"u1": {"n": float(i)}}, event_time_ms=t) == WriteResult(1, [])
        record = one(store, namespace, "u1")
        assert (record.values, record.event_time_ms) == ({"n": float(i)}, t)
    assert store.write(namespace, {"u1": {"n": 9.0}}, event_time_ms=T0 + 999).stale == []
    assert store.write(namespace, {"u1": {"n": -1.0}}, event_time_ms=T0 + 998).stale == ["u1"]


def test_ttl_expiry(expiring_store: OnlineStore, expire: Callable[[int], None], namespace: str) -> None:
    store = expiring_store
    store.write(namespace, {"gone": {"a": 1.0, "b": 1.0}, "kept": {"a": 1.0}}, event_time_ms=T0, ttl_s=0.2)
    store.write(namespace, {"kept": {"a": 2.0}}, event_time_ms=T0 + 1)  # no TTL: clears the expiry
    store.write(namespace, {"long": {"a": 1.0}}, event_time_ms=T0, ttl_s=60)
    store.write(namespace, {"dead": {"a": 1.0}}, event_time_ms=T0, ttl_s=0.2)
    assert store.read(namespace, ["gone"])[0] is not None
    expire(300)
    assert store.read(namespace, ["gone", "kept", "long"], ["a"])[0] is None
    assert [r.values for r in store.read(namespace, ["kept", "long"]) if r] == [{"a": 2.0}, {"a": 1.0}]
    # an expired entity is forgotten: an older event time applies and old fields do not come back
    assert store.write(namespace, {"gone": {"a": 5.0}}, event_time_ms=T0 - 1) == WriteResult(1, [])
    assert one(store, namespace, "gone").values == {"a": 5.0}
    assert store.delete(namespace, ["dead", "long"]) == 1  # an expired entity does not count


def test_delete(store: OnlineStore, namespace: str) -> None:
    store.write(namespace, {"u1": {"a": 1.0}, "u2": {"a": 2.0}}, event_time_ms=T0)
    assert store.delete(namespace, ["u1", "u1", "nobody"]) == 1
    assert store.read(namespace, ["u1", "u2"])[0] is None
    assert store.delete(namespace, []) == 0
    assert store.write(namespace, {"u1": {"b": 1.0}}, event_time_ms=T0 - 5).written == 1  # a fresh start
    assert one(store, namespace, "u1").values == {"b": 1.0}


def test_namespaces_are_separate(store: OnlineStore, namespace: str) -> None:
    store.write(namespace, {"u1": {"a": 1.0}}, event_time_ms=T0)
    store.write(namespace + "x", {"u1": {"a": 2.0}}, event_time_ms=T0 - 1)
    assert one(store, namespace, "u1").values == {"a": 1.0}
    assert one(store, namespace + "x", "u1").values == {"a": 2.0}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.write("a:b", {"u": {"x": 1}}, event_time_ms=1), "invalid namespace"),
        (lambda s: s.write("ns", {"u": {"__et": 1}}, event_time_ms=1), "invalid field name '__et'"),
        (lambda s: s.write("ns", {"u": {"x": [1]}}, event_time_ms=1), "cannot store a list"),
        (lambda s: s.write("ns", {"u": {"x": 1}}, event_time_ms={"v": 1}), "no event time for"),
        (lambda s: s.write("ns", {"u": {"x": 1}}, event_time_ms=1.5), "must be an int"),
        (lambda s: s.write("ns", {"u": {"x": 1}}, event_time_ms=2**60), "out of range"),
        (lambda s: s.write("ns", {"u": {"x": 1}}, event_time_ms=1, ttl_s=0), "ttl_s must be"),
        (lambda s: s.write("ns", {"": {"x": 1}}, event_time_ms=1), "invalid entity id"),
        (lambda s: s.read("ns", "u1"), "not the single value"),
        (lambda s: s.read("ns", ["u1"], ["__wa"]), "invalid field name"),
    ],
)
def test_bad_input_is_refused_with_a_reason(
    store: OnlineStore, call: Callable[[OnlineStore], object], message: str
) -> None:
    with pytest.raises(StoreInputError, match=message) as info:
        call(store)
    assert info.value.status == 422
    assert isinstance(info.value, ValueError)


def test_concurrent_threads(store: OnlineStore, namespace: str) -> None:
    def work(t: int) -> None:
        for i in range(50):
            store.write(namespace, {f"e{t}-{i}": {"v": float(i)}}, event_time_ms=T0 + i)
            assert store.read(namespace, [f"e{t}-{i}"])[0] is not None

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = store.read(namespace, [f"e{t}-{i}" for t in range(6) for i in range(50)])
    assert all(r is not None for r in records)


def test_async_store(url: str, namespace: str) -> None:
    async def main() -> None:
        store = open_async_store(url)
        try:
            rows: dict[str, dict[str, InValue]] = {
                "u1": {"a": math.nan, "blob": BLOB, "s": "x"},
                "u2": {"a": 2},
            }
            assert await store.write(namespace, rows, event_time_ms=T0) == WriteResult(2, [])
            assert (await store.write(namespace, {"u2": {"a": 0}}, event_time_ms=T0 - 1)).stale == ["u2"]
            await store.write(namespace, {"u1": {"b": 1}}, event_time_ms=T0)  # same ms: applied, merged
            u1, u2, nobody = await store.read(namespace, ["u1", "u2", "nobody"])
            assert nobody is None
            assert u1 is not None
            assert u2 is not None
            assert repr(u1.values["a"]) == "nan"
            assert (u1.values["blob"], u1.values["b"]) == (BLOB, 1.0)
            assert u2.values == {"a": 2.0}
            assert [r.values for r in await store.read(namespace, ["u1"], ["s"]) if r] == [{"s": "x"}]
            many = await asyncio.gather(*(store.read(namespace, ["u2"]) for _ in range(20)))
            assert all(r == [u2] for r in many)
            assert await store.delete(namespace, ["u1", "nobody"]) == 1
            assert await store.read(namespace, ["u1"]) == [None]
        finally:
            await store.close()

    asyncio.run(main())


def test_async_ttl_expiry(
    open_expiring_async: Callable[[], AsyncOnlineStore], expire: Callable[[int], None], namespace: str
) -> None:
    async def main() -> None:
        store = open_expiring_async()
        try:
            await store.write(namespace, {"tmp": {"a": 1}, "kept": {"a": 2}}, event_time_ms=T0, ttl_s=0.2)
            await store.write(namespace, {"kept": {"a": 3}}, event_time_ms=T0)  # no TTL: clears the expiry
            assert (await store.read(namespace, ["tmp"]))[0] is not None
            await asyncio.to_thread(expire, 300)
            assert await store.read(namespace, ["tmp"]) == [None]
            assert [r.values for r in await store.read(namespace, ["kept"]) if r] == [{"a": 3.0}]
            assert await store.delete(namespace, ["tmp", "kept"]) == 1
        finally:
            await store.close()

    asyncio.run(main())


def test_sqlite_survives_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'online.db'}"
    store = open_store(url)
    store.write("fraud", {"u1": {"a": 1.5, "blob": BLOB}}, event_time_ms=T0)
    store.close()
    reopened = open_store(url)
    try:
        [record] = reopened.read("fraud", ["u1"])
        assert record is not None
        assert (record.values, record.event_time_ms) == ({"a": 1.5, "blob": BLOB}, T0)
        assert reopened.write("fraud", {"u1": {"a": 0.0}}, event_time_ms=T0 - 1).stale == ["u1"]
    finally:
        reopened.close()


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="cannot open the SQLite feature store") as info:
        open_store(f"sqlite:///{tmp_path}")  # a directory
    assert info.value.status == 503
    with pytest.raises(StoreURLError, match="apply to Redis stores only"):
        open_store("memory://", max_connections=3)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://user:hunter2@db/x", "unsupported feature store URL 'postgres://user:\\*\\*\\*@db/x'"),
        ("memory", "unsupported feature store URL"),
        ("sqlite://relative.db", "cannot read the SQLite URL"),
    ],
)
def test_bad_url(url: str, message: str) -> None:
    with pytest.raises(StoreURLError, match=message) as info:
        open_store(url)
    assert info.value.status == 400
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, FourfoldError)
    assert "hunter2" not in str(info.value)


values = st.dictionaries(st.sampled_from("xyz"), st.floats(allow_nan=False) | st.text(max_size=3))
# few entities, few event times: many merges, ties and stale writes
writes = st.lists(st.dictionaries(st.sampled_from("abc"), st.tuples(st.integers(0, 4), values), min_size=1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=writes)
def test_event_time_rule_matches_a_model(
    store: OnlineStore, steps: list[dict[str, tuple[int, dict[str, float | str]]]]
) -> None:
    namespace = f"h{uuid.uuid4().hex[:12]}"
    model: dict[str, tuple[int, dict[str, object]]] = {}
    for step in steps:
        result = store.write(
            namespace,
            {e: fields for e, (_, fields) in step.items()},
            event_time_ms={e: et for e, (et, _) in step.items()},
        )
        stale: list[str] = []
        for entity, (et, fields) in step.items():
            if entity in model and et < model[entity][0]:
                stale.append(entity)
            else:
                model[entity] = (et, {**model.get(entity, (0, {}))[1], **fields})  # merged in order
        assert result == WriteResult(len(step) - len(stale), stale)
    records = store.read(namespace, ["a", "b", "c"])
    got = {e: (r.event_time_ms, r.values) for e, r in zip("abc", records, strict=True) if r is not None}
    assert got == model


def test_transact_applies_every_write_under_a_fence(store: OnlineStore, namespace: str) -> None:
    fence_ns = f"{namespace}_ck"
    assert store.transact(
        [Write(fence_ns, {"p0": {"epoch": 1.0}}, 1)], fences=[Fence(fence_ns, "p0", "epoch", None)]
    )
    writes = [
        Write(namespace, {"u1": {"n": 1.0}, "u2": {"n": 2.0}}, {"u1": 10, "u2": 20}),
        Write(fence_ns, {"p0": {"offset": 42.0}}, 2),
    ]
    results = store.transact(writes, fences=[Fence(fence_ns, "p0", "epoch", 1.0)])
    assert [r.written for r in results] == [2, 1]
    [u1, u2] = store.read(namespace, ["u1", "u2"])
    assert u1 is not None
    assert u1.values == {"n": 1.0}
    assert u1.event_time_ms == 10
    assert u2 is not None
    assert u2.values == {"n": 2.0}
    [ck] = store.read(fence_ns, ["p0"])
    assert ck is not None
    assert ck.values == {"epoch": 1.0, "offset": 42.0}


def test_a_moved_fence_writes_nothing(store: OnlineStore, namespace: str) -> None:
    fence_ns = f"{namespace}_ck"
    store.write(fence_ns, {"p0": {"epoch": 2.0}}, event_time_ms=1)
    with pytest.raises(FencedError, match=r"holds 2\.0, not 1\.0"):
        store.transact(
            [Write(namespace, {"u1": {"n": 1.0}}, 10), Write(fence_ns, {"p0": {"offset": 7.0}}, 2)],
            fences=[Fence(fence_ns, "p0", "epoch", 1.0)],
        )
    assert store.read(namespace, ["u1"]) == [None]
    [ck] = store.read(fence_ns, ["p0"])
    assert ck is not None
    assert ck.values == {"epoch": 2.0}
    with pytest.raises(FencedError, match="holds None"):
        store.transact(
            [Write(namespace, {"u1": {"n": 1.0}}, 10)], fences=[Fence(fence_ns, "p9", "epoch", 1.0)]
        )
    assert store.read(namespace, ["u1"]) == [None]


def test_transact_keeps_the_event_time_rule_per_write(store: OnlineStore, namespace: str) -> None:
    store.write(namespace, {"u1": {"n": 5.0}}, event_time_ms=100)
    [result] = store.transact([Write(namespace, {"u1": {"n": 1.0}, "u2": {"n": 2.0}}, 50)])
    assert result.stale == ["u1"]
    assert result.written == 1
    assert store.read(namespace, ["u1"])[0].values == {"n": 5.0}  # type: ignore[union-attr]
