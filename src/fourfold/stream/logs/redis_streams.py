"""Redis Streams as a stream source and sink: a sharded log with one owner per shard.

    >>> # producer: an event with key k goes to the stream tx:{crc32(k) % 4}
    >>> # with RedisStreamSink("redis-stream://127.0.0.1:6379/0/tx?shards=4") as out:
    >>> #     out.send([OutRecord(b"u1", b'{"amount": 3.5}')]); out.flush()
    >>> # src = RedisStreamSource("redis-stream://:secret@127.0.0.1:6379/0/tx?shards=4", group="fraud")
    >>> # src.start(listener)          # the listener hears assigned / revoked from inside poll
    >>> # batch = src.poll(500, 1.0)   # [Message(partition=2, offset=..., key=b'u1', ...)]
    >>> # src.commit({2: batch[-1].offset + 1})

URL: ``redis-stream://[:password@]host:port/db/name?shards=N[&group=g][&block_ms=100][&lease_ms=10000]``
(a sink takes ``shards`` and ``maxlen``, nothing else of these); other query options (``socket_timeout``,
``socket_connect_timeout``, ``max_connections`` ...) go to redis-py's connection pool.

**Shards.** Redis consumer groups are not key-affine, so the log is N streams ``name:0`` .. ``name:N-1``
and an event with key k is appended to ``name:{shard_of(k, N)}`` (``crc32(k) % N``): every event of one
key is in one shard, in append order. Each shard is a partition. N is fixed for the life of a stream: the
first source or sharded sink records it in ``{name}:shards`` and any other N is refused. Fields ``key``
and ``value`` carry the record; an entry without a ``value`` reads as an empty payload.

**Offsets.** An entry's offset is its id ``ms-seq`` as the exact int ``ms << 20 | seq`` (``seq`` must be
below 2**20: more than a million entries in one ms is refused); ``log_time_ms`` is ``ms``. The map keeps
order, so offsets increase strictly per shard, and ``offset + 1`` is the next offset to read: reading
from offset o means the entries with an id after ``entry_id(o - 1)`` (from ``0-0`` for o = 0).

**Ownership.** One member of a group owns a shard through a lease, ``{name}:{group}:lease:{p}`` = member
(``SET NX PX lease_ms``), and joins the group through a heartbeat in the sorted set
``{name}:{group}:members`` (score: its expiry, on the Redis clock). ``start`` joins; each ``poll`` runs one
script that beats the heart, renews the leases held, and takes free shards up to ``ceil(N / live
members)``; the member then gives back any shards beyond that share (so with N = 4 and 3 members, one
member stands by). A lease that did not renew (expired while the
process did not poll for ``lease_ms``, or deleted) is lost at once. ``commit`` is fenced: it lands only
for shards whose lease this member still holds, so a process that lost a shard cannot move the group's
progress. Delivery is at least once: a lost shard's last batch may be processed by both owners.

**Lag.** ``entries-added`` (``XINFO STREAM``) minus the number of entries up to the read position. That
number is known at the beginning, from a commit made at the position it had, and from then on by counting
what was read; otherwise ``lag`` counts the entries after the position in Redis, exactly up to 10,000 (and
reports 10,000, a lower bound, beyond). It is exact for streams trimmed from the front after they are
read (``MAXLEN`` / ``MINID``); entries removed before they are read (``XDEL``, trimming ahead of the
reader) make it count high.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from operator import attrgetter

from fourfold.errors import InvalidOptionError, UnavailableError
from fourfold.stream.logs.base import Message, OutRecord, Rebalance
from fourfold.stream.logs.redis_layout import (
    SEQ_BITS,
    SEQ_MASK,
    RedisClient,
    entry_id,
    offset_of,
    parse_redis_stream_url,
    shard_of,
)

__all__ = ["RedisStreamSink", "RedisStreamSource"]

_LAG_CAP = 10_000
_by_offset = attrgetter("offset")
_CHUNK = 1000  # records per append script: about a millisecond of Redis's time

# KEYS = members, lease 0 .. lease N-1; ARGV = member, lease ms, 1 to take shards (0: only beat the heart),
# then the shards the member believes it holds. Returns {held, lost, gained, share}: a shard whose lease is
# gone is lost, even when it is taken again at once; a lease that names the member but that it does not
# believe it holds (a failed assignment) is taken as gained.
_REBALANCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member, lease = ARGV[1], tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, member)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('PTTL', KEYS[1]) < lease * 3 then redis.call('PEXPIRE', KEYS[1], lease * 3) end
local n = #KEYS - 1
local share = math.ceil(n / redis.call('ZCARD', KEYS[1]))
local held, lost, gained, mine = {}, {}, {}, {}
for i = 4, #ARGV do
  local p = tonumber(ARGV[i])
  if redis.call('GET', KEYS[p + 2]) == member then
    redis.call('PEXPIRE', KEYS[p + 2], lease)
    held[#held + 1] = p
    mine[p] = true
  else
    lost[#lost + 1] = p
  end
end
if ARGV[3] == '1' then
  for p = 0, n - 1 do
    if #held + #gained >= share then break end
    if not mine[p] then
      local owner = redis.call('GET', KEYS[p + 2])
      if owner == member or not owner then
        redis.call('SET', KEYS[p + 2], member, 'PX', lease)
        gained[#gained + 1] = p
      end
    end
  end
end
return {held, lost, gained, share}
"""
# KEYS = members, leases to give back; ARGV = member, 1 to leave the group as well
_RELEASE = """
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
if ARGV[2] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""
# KEYS = committed hash, one lease per shard; ARGV = member, then shard, offset, entries read ('': unknown)
_COMMIT = """
for i = 2, #KEYS do
  local j = 2 + (i - 2) * 3
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1])
    if ARGV[j + 2] == '' then redis.call('HDEL', KEYS[1], ARGV[j] .. ':read')
    else redis.call('HSET', KEYS[1], ARGV[j] .. ':read', ARGV[j + 2]) end
  end
end
return 0
"""
# KEYS = a shard's stream; ARGV = position ('': only entries-added is wanted), cap.
# Returns {entries added, entries after the position (up to cap), 1 if that count is complete}.
_LAG = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 1} end
local info, added = redis.call('XINFO', 'STREAM', KEYS[1]), 0
for i = 1, #info, 2 do if info[i] == 'entries-added' then added = info[i + 1] end end
if ARGV[1] == '' then return {added, 0, 1} end
local n, cur, cap = 0, ARGV[1], tonumber(ARGV[2])
while n < cap do
  local got = redis.call('XRANGE', KEYS[1], '(' .. cur, '+', 'COUNT', math.min(1000, cap - n))
  if #got == 0 then return {added, n, 1} end
  n, cur = n + #got, got[#got][1]
end
return {added, n, 0}
"""
# KEYS = the streams; ARGV = maxlen ('': none), then per record: the index of its stream in KEYS, key, value
_APPEND = """
local cap = ARGV[1]
for i = 2, #ARGV, 3 do
  local stream = KEYS[tonumber(ARGV[i])]
  if cap == '' then redis.call('XADD', stream, '*', 'key', ARGV[i + 1], 'value', ARGV[i + 2])
  else redis.call('XADD', stream, 'MAXLEN', '~', cap, '*', 'key', ARGV[i + 1], 'value', ARGV[i + 2]) end
end
return 0
"""


@dataclass(slots=True)
class _Position:
    after: str  # the entry id read up to: XREAD returns the entries after it
    next: int  # the next offset to read (0 at the beginning)
    read: int | None  # entries ever added up to ``after``, for lag; None until known


def _position(start: int, read: int | None) -> _Position:
    return _Position(entry_id(start - 1) if start > 0 else "0-0", start, 0 if start == 0 else read)


class RedisStreamSource(RedisClient):
    """One member of ``group`` reading the shards ``name:0`` .. ``name:N-1`` whose leases it holds.

    ``group`` (or the URL's ``group=``, which wins) names the consumer group; ``member`` defaults to
    ``host-pid-random``. The listener's ``assigned`` and ``revoked`` run inside :meth:`poll`."""

    finished = False

    def __init__(self, url: str, *, group: str = "fourfold", member: str | None = None) -> None:
        where = parse_redis_stream_url(url)
        if where.shards is None:
            raise InvalidOptionError(
                f"the Redis stream source {where.url} needs ?shards=N: the number of streams name:0 .. "
                f"name:N-1 its producers append to"
            )
        self.shards: int = where.shards
        self.group = where.group or group
        if not self.group or ":" in self.group:
            raise InvalidOptionError(f"a group is a non-empty name without ':', got {self.group!r:.60}")
        self.member = member or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.block_ms, self.lease_ms = where.block_ms, where.lease_ms
        self.stream = where.stream
        self.name = "redis-" + where.stream.replace(":", "_").replace("/", "_")
        client = self._connect(where, "stream source")
        self._keys = [f"{where.stream}:{p}" for p in range(self.shards)]
        self._shard_of = {key.encode(): p for p, key in enumerate(self._keys)}
        scope = f"{where.stream}:{self.group}"
        self._members, self._committed = f"{scope}:members", f"{scope}:committed"
        self._leases = [f"{scope}:lease:{p}" for p in range(self.shards)]
        self._rebalance = client.register_script(_REBALANCE)
        self._release = client.register_script(_RELEASE)
        self._commit = client.register_script(_COMMIT)
        self._lag = client.register_script(_LAG)
        self._listener: Rebalance | None = None
        self._held: dict[int, _Position] = {}
        self._closed = False

    @property
    def owned(self) -> list[int]:
        """The shards this member holds now."""
        return sorted(self._held)

    def start(self, listener: Rebalance) -> None:
        """Check the shard count and join the group (so that members starting together split the shards
        at once); shards are taken, and the listener called, from :meth:`poll` on."""
        self._check_shards(self.stream, self.shards)
        with self._errors():
            self._rebalance(keys=[self._members, *self._leases], args=[self.member, self.lease_ms, 0])
        self._listener = listener

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Rebalance (``revoked`` for shards lost or given back, then ``assigned`` for shards gained), then
        one ``XREAD`` over the shards held, repeated every ``block_ms`` until ``timeout_s`` passes."""
        if self._listener is None:
            raise InvalidOptionError(f"call start(listener) on the Redis stream source {self.url} first")
        if max_messages < 1:
            raise InvalidOptionError(f"max_messages must be >= 1, got {max_messages}")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            self._step(self._listener)
            left_ms = int((deadline - time.monotonic()) * 1000)
            if self._held:
                out = self._read(max_messages, min(self.block_ms, left_ms) if left_ms >= 1 else None)
                if out:
                    return out
            elif left_ms >= 1:
                time.sleep(min(self.block_ms, left_ms) / 1000)
            if time.monotonic() >= deadline:
                return []

    def _step(self, listener: Rebalance) -> None:
        with self._errors():
            reply = self._rebalance(
                keys=[self._members, *self._leases], args=[self.member, self.lease_ms, 1, *self._held]
            )
        held, lost, gained = ([int(p) for p in part] for part in reply[:3])
        if lost:
            for p in lost:
                del self._held[p]
            listener.revoked(lost)
        extra = sorted(held)[int(reply[3]) :]
        if extra:
            listener.revoked(extra)  # while the leases are still held: the listener may commit
            for p in extra:
                del self._held[p]
            self._give_back(extra)
        if gained:
            try:
                self._take(listener, gained)
            except BaseException:
                self._give_back(gained)
                raise

    def _give_back(self, shards: Sequence[int], leave: bool = False) -> None:
        with self._errors():
            self._release(
                keys=[self._members, *(self._leases[p] for p in shards)], args=[self.member, int(leave)]
            )

    def _take(self, listener: Rebalance, gained: list[int]) -> None:
        with self._errors():
            stored = self.client.hmget(self._committed, [f for p in gained for f in (p, f"{p}:read")])
        starts = listener.assigned(gained)
        taken: dict[int, _Position] = {}
        for i, p in enumerate(gained):
            committed, read = stored[2 * i], stored[2 * i + 1]
            start = starts.get(p)
            if start is None:
                start = int(committed) if committed is not None else 0
            elif isinstance(start, bool) or not isinstance(start, int) or start < 0:
                raise InvalidOptionError(
                    f"assigned() returned {start!r:.40} for shard {p}: use an offset >= 0"
                )
            known = committed is not None and int(committed) == start and read is not None
            taken[p] = _position(start, int(read) if known else None)
        self._held.update(taken)

    def _read(self, max_messages: int, block_ms: int | None) -> list[Message]:
        count = -(-max_messages // len(self._held))
        with self._errors():
            reply = self.client.xread(
                {self._keys[p]: pos.after for p, pos in self._held.items()}, count=count, block=block_ms
            )
        out: list[Message] = []
        for key, entries in reply or []:
            p = self._shard_of[key]
            for raw_id, fields in entries:
                ms, _, seq = raw_id.partition(b"-")
                if int(seq) > SEQ_MASK:
                    offset_of(raw_id)  # raises, naming the entry
                offset = int(ms) << SEQ_BITS | int(seq)
                out.append(Message(p, offset, fields.get(b"key"), fields.get(b"value", b""), int(ms)))
        if reply and len(reply) > 1:
            out.sort(key=_by_offset)  # log-time order across shards: a cut keeps a prefix of every shard
        del out[max_messages:]
        last = {m.partition: m.offset for m in out}
        for p, n in Counter(m.partition for m in out).items():
            pos = self._held[p]
            pos.after, pos.next = entry_id(last[p]), last[p] + 1
            pos.read = None if pos.read is None else pos.read + n
        return out

    def seek(self, offsets: Mapping[int, int]) -> None:
        """Read the held shards among ``offsets`` from the given offsets (others are ignored)."""
        for p, offset in offsets.items():
            self._check_shard(p)
            pos = self._held.get(p)
            if pos is not None and offset != pos.next:
                self._held[p] = _position(offset, None)

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Store the group's next offset per shard; only for shards whose lease this member still holds
        (a lost one is reported ``revoked`` by the next :meth:`poll`)."""
        args: list[str | int] = [self.member]
        keys: list[str] = [self._committed]
        for p, offset in offsets.items():
            self._check_shard(p)
            pos = self._held.get(p)
            if pos is None:
                continue
            read = pos.read if offset == pos.next and pos.read is not None else ""
            keys.append(self._leases[p])
            args += [p, offset, read]
        if len(keys) > 1:
            with self._errors():
                self._commit(keys=keys, args=args)

    def committed(self, partitions: Sequence[int]) -> dict[int, int | None]:
        for p in partitions:
            self._check_shard(p)
        if not partitions:
            return {}
        with self._errors():
            got = self.client.hmget(self._committed, list(partitions))
        return {p: None if raw is None else int(raw) for p, raw in zip(partitions, got, strict=True)}

    def lag(self) -> dict[int, int]:
        """Entries after the read position per held shard (see the module docstring for how exact)."""
        held = sorted(self._held)
        with self._errors(), self.client.pipeline(transaction=False) as pipe:
            for p in held:
                pos = self._held[p]
                after = "" if pos.read is not None else pos.after
                self._lag(keys=[self._keys[p]], args=[after, _LAG_CAP], client=pipe)
            replies = pipe.execute()
        out: dict[int, int] = {}
        for p, (added, after, complete) in zip(held, replies, strict=True):
            pos = self._held[p]
            if pos.read is None and complete:
                pos.read = int(added) - int(after)
            out[p] = max(0, int(added) - pos.read) if pos.read is not None else int(after)
        return out

    def _check_shard(self, p: int) -> None:
        if not 0 <= p < self.shards:
            raise InvalidOptionError(f"shard {p} is not one of 0 .. {self.shards - 1} of {self.url}")

    def close(self) -> None:
        """Give back every lease and leave the group (best effort: leases expire on their own)."""
        if self._closed:
            return
        held, self._held, self._closed = list(self._held), {}, True
        with suppress(UnavailableError):
            self._give_back(held, leave=True)
        self.client.close()
        self.client.connection_pool.disconnect()

    def __enter__(self) -> RedisStreamSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisStreamSink(RedisClient):
    """Appends records to the stream ``name`` (with ``?shards=N``: to ``name:{shard_of(key, N)}``, the
    producer side of a sharded source) as ``XADD name * key <key> value <value>``, queued until
    :meth:`flush`. ``?maxlen=M`` trims each stream to about M entries (``MAXLEN ~``)."""

    def __init__(self, url: str) -> None:
        where = parse_redis_stream_url(url)
        if where.group is not None:
            raise InvalidOptionError(f"group is an option of a source, not of the sink {where.url}")
        self.shards, self.stream, self.maxlen = where.shards, where.stream, where.maxlen
        client = self._connect(where, "stream sink")
        self._streams = (
            [where.stream] if self.shards is None else [f"{where.stream}:{p}" for p in range(self.shards)]
        )
        self._index = [str(i + 1).encode() for i in range(len(self._streams))]  # KEYS[i] in _APPEND
        self._append = client.register_script(_APPEND)
        self._queued: list[bytes] = []
        self._checked = self.shards is None

    def send(self, records: Sequence[OutRecord]) -> None:
        queued, index, shards = self._queued, self._index, self.shards
        for r in records:
            queued += (index[0] if shards is None else index[shard_of(r.key, shards)], r.key, r.value)

    def flush(self) -> None:
        """Append everything sent since the last flush, in order per stream, ``_CHUNK`` records per
        script call; the records of a failed flush are dropped (some may have been appended)."""
        queued, self._queued = self._queued, []
        if not self._checked:
            assert self.shards is not None
            self._check_shards(self.stream, self.shards)
            self._checked = True
        cap = b"" if self.maxlen is None else str(self.maxlen).encode()
        with self._errors():
            for i in range(0, len(queued), 3 * _CHUNK):
                self._append(keys=self._streams, args=[cap, *queued[i : i + 3 * _CHUNK]])

    def mark(self) -> int | None:
        return None  # an XADD cannot be taken back

    def rewind(self, mark: int) -> None:
        raise InvalidOptionError(
            f"the Redis stream sink {self.url} cannot take appends back (mark() is None): delivery is at "
            f"least once"
        )

    def close(self) -> None:
        self._queued = []
        self.client.close()
        self.client.connection_pool.disconnect()

    def __enter__(self) -> RedisStreamSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
