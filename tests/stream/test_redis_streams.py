"""Redis Streams as a sharded log, against a real ``redis-server``: the producer's sharding, one owner per
shard across members of a group, hand-over after the committed offsets, lost leases, and the sink."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from fourfold.errors import ConflictError, FourfoldError, InvalidOptionError, UnavailableError
from fourfold.stream.logs.base import Message, OutRecord, Sink, Source
from fourfold.stream.logs.redis_layout import entry_id, offset_of, parse_redis_stream_url, shard_of
from fourfold.stream.logs.redis_streams import RedisStreamSink, RedisStreamSource
from serving import redis_server, wait_until


class Listener:
    """Records every rebalance; ``starts`` says where a gained shard starts (missing: None)."""

    def __init__(self, starts: Mapping[int, int] | None = None) -> None:
        self.starts = dict(starts or {})
        self.events: list[tuple[str, list[int]]] = []

    def assigned(self, partitions: Sequence[int]) -> Mapping[int, int | None]:
        self.events.append(("assigned", list(partitions)))
        return {p: self.starts.get(p) for p in partitions}

    def revoked(self, partitions: Sequence[int]) -> None:
        self.events.append(("revoked", list(partitions)))


class Member:
    """A source that commits right after every batch, as the processor does, and keeps what it read."""

    def __init__(self, url: str, group: str, starts: Mapping[int, int] | None = None) -> None:
        self.listener = Listener(starts)
        self.source = RedisStreamSource(url, group=group)
        self.source.start(self.listener)
        self.read: list[Message] = []

    def poll(self, max_messages: int = 1000, timeout_s: float = 0.0) -> list[Message]:
        batch = self.source.poll(max_messages, timeout_s)
        self.read += batch
        nexts: dict[int, int] = {}
        for m in batch:
            nexts[m.partition] = m.offset + 1
        self.source.commit(nexts)
        return batch


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with redis_server() as p:
        yield p


@pytest.fixture
def raw(port: int) -> Iterator[Any]:
    with redis.Redis(port=port) as client:
        yield client


@pytest.fixture
def name() -> str:
    return f"tx-{uuid.uuid4().hex[:8]}"


def url_of(port: int, name: str, query: str = "") -> str:
    return f"redis-stream://127.0.0.1:{port}/0/{name}" + (f"?{query}" if query else "")


def produce(port: int, name: str, shards: int, records: list[OutRecord]) -> None:
    with RedisStreamSink(url_of(port, name, f"shards={shards}")) as sink:
        sink.send(records)
        sink.flush()


def keyed(n: int, keys: int, tag: str = "") -> list[OutRecord]:
    """``n`` records over ``keys`` keys; the value is ``tag`` + the record's number within its key."""
    seen: dict[int, int] = {}
    out = []
    for i in range(n):
        k = i % keys
        seen[k] = seen.get(k, -1) + 1
        out.append(OutRecord(f"k{k}".encode(), f"{tag}{seen[k]}".encode()))
    return out


def drain(member: Member, n: int, max_messages: int = 1000) -> list[Message]:
    """Poll until ``member`` has read ``n`` messages in all (then check that nothing more comes)."""
    for _ in range(200):
        if len(member.read) >= n:
            break
        member.poll(max_messages, 1.0)
    assert len(member.read) == n
    assert member.poll(max_messages, 0.0) == []
    return member.read


def entries(raw: Any, key: str) -> list[int]:
    return [offset_of(i) for i, _ in raw.xrange(key)]


def test_sources_and_sinks_follow_the_log_contract(port: int, name: str) -> None:
    with RedisStreamSink(url_of(port, name)) as sink:
        assert isinstance(sink, Sink)
    with RedisStreamSource(url_of(port, name, "shards=2"), group="g") as source:
        assert isinstance(source, Source)
        assert source.name == f"redis-{name}"
        assert source.finished is False


def test_round_trip_keeps_every_key_in_one_shard_in_order(port: int, name: str, raw: Any) -> None:
    records = keyed(10_000, 300)
    produce(port, name, 4, records)
    member = Member(url_of(port, name, "shards=4"), "g")
    got = drain(member, 10_000, max_messages=999)  # 4 shards, 250 each: cut to 999 - nothing skipped

    assert member.listener.events == [("assigned", [0, 1, 2, 3])]
    shards_of_key: dict[bytes, set[int]] = {}
    values: dict[bytes, list[bytes]] = {}
    last: dict[int, int] = {}
    for m in got:
        assert m.key is not None
        shards_of_key.setdefault(m.key, set()).add(m.partition)
        values.setdefault(m.key, []).append(m.value)
        assert m.offset > last.get(m.partition, -1)
        last[m.partition] = m.offset
        assert m.log_time_ms == m.offset >> 20
    assert all(s == {shard_of(k, 4)} for k, s in shards_of_key.items())
    expected: dict[bytes, list[bytes]] = {}
    for r in records:
        expected.setdefault(r.key, []).append(r.value)
    assert values == expected
    assert sorted(last) == [0, 1, 2, 3]
    for p in range(4):
        assert [m.offset for m in got if m.partition == p] == entries(raw, f"{name}:{p}")
    assert member.source.lag() == {0: 0, 1: 0, 2: 0, 3: 0}
    member.source.close()


def test_two_members_split_the_shards_and_hand_over_after_the_commits(port: int, name: str) -> None:
    url = url_of(port, name, "shards=4")
    produce(port, name, 4, keyed(1000, 50, "a"))
    a, b = Member(url, "g"), Member(url, "g")

    def split() -> bool:
        a.poll()
        b.poll()
        return len(a.source.owned) == 2 and len(b.source.owned) == 2

    wait_until(split, what="two members to own two shards each")
    assert sorted(a.source.owned + b.source.owned) == [0, 1, 2, 3]
    # both joined on start, so a took its share only: nothing was given back
    assert [kind for kind, _ in a.listener.events + b.listener.events] == ["assigned", "assigned"]

    produce(port, name, 4, keyed(1000, 50, "b"))
    a.poll(max_messages=7)  # part of what is new, committed
    a_shards = a.source.owned
    a.source.close()
    wait_until(lambda: b.poll() is not None and len(b.source.owned) == 4, what="b to take a's shards")
    assert b.listener.events[-1] == ("assigned", a_shards)
    drain(b, 2000 - len(a.read))

    read = [(m.partition, m.offset) for m in a.read + b.read]
    assert len(read) == len(set(read)) == 2000
    by_key: dict[bytes | None, list[bytes]] = {}
    for m in sorted(a.read + b.read, key=lambda m: (m.partition, m.offset)):
        by_key.setdefault(m.key, []).append(m.value)
    expected: dict[bytes | None, list[bytes]] = {}
    for r in keyed(1000, 50, "a") + keyed(1000, 50, "b"):
        expected.setdefault(r.key, []).append(r.value)
    assert by_key == expected
    b.source.close()


def test_a_member_joining_later_gets_its_share_from_the_first(port: int, name: str) -> None:
    url = url_of(port, name, "shards=4")
    produce(port, name, 4, keyed(400, 40))
    a = Member(url, "g")
    a.poll()
    assert a.source.owned == [0, 1, 2, 3]
    b = Member(url, "g")
    wait_until(lambda: b.poll() is not None and a.poll() is not None and len(b.source.owned) == 2)
    assert a.listener.events == [("assigned", [0, 1, 2, 3]), ("revoked", [2, 3])]
    assert b.listener.events == [("assigned", [2, 3])]
    assert b.read == []  # a had read and committed everything before it gave the shards back
    a.source.close()
    b.source.close()


class Failing(Listener):
    def assigned(self, partitions: Sequence[int]) -> Mapping[int, int | None]:
        raise RuntimeError("the checkpoint store is down")


def test_a_failed_assignment_gives_the_shards_back(port: int, name: str, raw: Any) -> None:
    source = RedisStreamSource(url_of(port, name, "shards=2"), group="g")
    source.start(Failing())
    with pytest.raises(RuntimeError, match="checkpoint store"):
        source.poll(10, 0.0)
    assert source.owned == []
    assert raw.exists(f"{name}:g:lease:0", f"{name}:g:lease:1") == 0
    listener = Listener()
    source.start(listener)
    source.poll(10, 0.0)
    assert listener.events == [("assigned", [0, 1])]
    source.close()


def test_assigned_offsets_seek_commit_and_committed(port: int, name: str, raw: Any) -> None:
    url = url_of(port, name, "shards=1")
    produce(port, name, 1, keyed(100, 3))
    offsets = entries(raw, f"{name}:0")
    first = Member(url, "g", starts={0: offsets[50]})
    assert [m.offset for m in first.poll(20)] == offsets[50:70]
    assert first.source.lag() == {0: 30}

    first.source.seek({0: offsets[10]})
    assert [m.offset for m in first.source.poll(5, 0.0)] == offsets[10:15]
    assert first.source.lag() == {0: 85}  # counted in Redis after a seek
    first.source.commit({0: offsets[15]})
    assert first.source.committed([0]) == {0: offsets[15]}
    first.source.close()

    again = Member(url, "g")  # starts at None: the group's committed offset
    assert [m.offset for m in again.poll(1)] == [offsets[15]]
    assert again.source.lag() == {0: 84}
    again.source.close()

    fresh = Member(url, "other")  # nothing committed in this group: from the beginning
    assert fresh.source.committed([0]) == {0: None}
    assert [m.offset for m in fresh.poll(2)] == offsets[:2]
    fresh.source.close()


def test_a_lost_lease_is_revoked_on_the_next_poll(port: int, name: str, raw: Any) -> None:
    url = url_of(port, name, "shards=2")
    produce(port, name, 2, keyed(10, 4))
    a = Member(url, "g")
    a.poll()
    assert a.source.owned == [0, 1]

    raw.delete(f"{name}:g:lease:1")
    a.poll()
    assert a.listener.events[-2:] == [("revoked", [1]), ("assigned", [1])]  # free again: taken anew

    raw.set(f"{name}:g:lease:0", "intruder")  # another member took shard 0
    before = a.source.committed([0])
    produce(port, name, 2, [OutRecord(b"x", b"1")] * 4)
    a.poll()
    assert a.listener.events[-1] == ("revoked", [0])
    assert a.source.owned == [1]
    a.source.commit({0: 1 << 62})  # not the owner any more: fenced
    assert a.source.committed([0]) == before
    a.source.close()


def test_an_expired_lease_moves_to_a_live_member(port: int, name: str, raw: Any) -> None:
    url = url_of(port, name, "shards=2&lease_ms=300&block_ms=20")
    a = Member(url, "g")
    a.poll()
    assert a.source.owned == [0, 1]
    # a stops polling; its leases run out on Redis's clock
    wait_until(lambda: raw.exists(f"{name}:g:lease:0", f"{name}:g:lease:1") == 0, what="the leases to expire")
    b = Member(url.replace("lease_ms=300", "lease_ms=60000"), "g")  # b's leases outlast the test
    b.poll()
    assert b.source.owned == [0, 1]
    a.poll()
    assert ("revoked", [0, 1]) in a.listener.events
    assert a.source.owned == []
    a.source.close()
    b.source.close()


def test_the_sink_appends_in_order_and_cannot_rewind(port: int, name: str, raw: Any) -> None:
    records = [OutRecord(f"e{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(500)]
    with RedisStreamSink(url_of(port, name)) as sink:
        sink.send(records[:200])
        sink.send(records[200:])
        assert raw.xlen(name) == 0  # queued until flush
        sink.flush()
        assert sink.mark() is None
        with pytest.raises(InvalidOptionError, match="cannot take appends back"):
            sink.rewind(0)
    got = [OutRecord(f[b"key"], f[b"value"]) for _, f in raw.xrange(name)]
    assert got == records


def test_a_shard_count_other_than_the_streams_is_refused(port: int, name: str) -> None:
    produce(port, name, 4, keyed(4, 4))
    with pytest.raises(ConflictError, match="has 4 shards"):
        RedisStreamSource(url_of(port, name, "shards=8"), group="g").start(Listener())
    with RedisStreamSink(url_of(port, name, "shards=2")) as sink:
        sink.send(keyed(1, 1))
        with pytest.raises(ConflictError, match="use shards=4"):
            sink.flush()


def test_errors_when_redis_is_gone_name_the_url_without_the_password(name: str) -> None:
    with redis_server() as own:
        with redis.Redis(port=own) as admin:
            admin.config_set("requirepass", "s3cret")
        sink = RedisStreamSink(f"redis-stream://:s3cret@127.0.0.1:{own}/0/{name}?shards=1")
        source = RedisStreamSource(f"redis-stream://:s3cret@127.0.0.1:{own}/0/{name}?shards=1", group="g")
        source.start(Listener())
        sink.send([OutRecord(b"k", b"v")])
        sink.flush()
        assert len(source.poll(10, 1.0)) == 1
    sink.send([OutRecord(b"k", b"w")])
    with pytest.raises(UnavailableError) as err:
        sink.flush()
    assert f"redis-stream://:***@127.0.0.1:{own}/0/{name}" in str(err.value)
    assert "s3cret" not in str(err.value)
    with pytest.raises(UnavailableError, match=r"stream source redis-stream://:\*\*\*@") as err:
        source.poll(10, 0.0)
    assert "s3cret" not in str(err.value)
    sink.close()
    source.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis-stream://127.0.0.1:6379/0/tx", "needs \\?shards=N"),
        ("redis-stream://127.0.0.1:6379/tx?shards=2", "redis-stream://"),
        ("redis://127.0.0.1:6379/0/tx?shards=2", "redis-stream://"),
        ("redis-stream://127.0.0.1:6379/0/tx?shards=0", "shards .* >= 1"),
        ("redis-stream://127.0.0.1:6379/0/tx?shards=2&block_ms=100&lease_ms=150", "twice block_ms"),
        ("redis-stream://:pw@127.0.0.1:6379/0/tx?shards=x", "shards in redis-stream://:\\*\\*\\*@"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match) as err:
        RedisStreamSource(url, group="g")
    assert ":pw@" not in str(err.value)


def test_a_group_name_cannot_hold_a_colon() -> None:
    with pytest.raises(InvalidOptionError, match="without ':'"):
        RedisStreamSource("redis-stream://127.0.0.1:6379/0/tx?shards=2", group="a:b")


def test_url_options_and_pool_options() -> None:
    parsed = parse_redis_stream_url(
        "redis-stream://:pw@h:1/2/a:b?shards=3&group=fraud&block_ms=50&lease_ms=5000&socket_timeout=3"
    )
    assert (parsed.stream, parsed.shards, parsed.group, parsed.block_ms, parsed.lease_ms) == (
        "a:b", 3, "fraud", 50, 5000
    )  # fmt: skip
    assert parsed.redis_url == "redis://:pw@h:1/2?socket_timeout=3"
    assert parsed.url == "redis-stream://:***@h:1/2/a:b"


@given(
    st.tuples(st.integers(0, 2**48), st.integers(0, 2**20 - 1)),
    st.tuples(st.integers(0, 2**48), st.integers(0, 2**20 - 1)),
)
def test_offsets_keep_the_order_of_entry_ids(a: tuple[int, int], b: tuple[int, int]) -> None:
    oa, ob = offset_of(f"{a[0]}-{a[1]}"), offset_of(f"{b[0]}-{b[1]}".encode())
    assert (oa < ob) == (a < b)
    assert entry_id(oa) == f"{a[0]}-{a[1]}"
    assert oa >> 20 == a[0]


def test_a_sequence_over_20_bits_is_refused() -> None:
    with pytest.raises(FourfoldError, match="2\\*\\*20"):
        offset_of("1-1048576")
