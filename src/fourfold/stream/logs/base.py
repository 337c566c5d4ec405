"""The log contract every stream source and sink follows, and ``open_source`` / ``open_sink`` by URL.

A **source** is a partitioned, replayable log read by one consumer group: messages carry their
partition and offset; the processor tells the source where each partition it gains starts (its
checkpoint) and commits the next offsets after a batch. A **sink** appends records and makes them
durable on ``flush``. Three backends share this contract:

* ``kafka://host:port[,host:port]/topic?option=value`` - Apache Kafka (confluent-kafka); the entity is the
  message key and scale-out is N processes in one consumer group;
* ``redis-stream://host:port/db/name?shards=N`` - Redis Streams, sharded by ``hash(key) % N`` into the
  streams ``name:0`` .. ``name:N-1``, one owner per shard;
* a path ending in ``.jsonl`` (or ``file:///...``), or ``-`` for stdin / stdout - one JSON object per
  line, the embedded default: one partition, the line number is the offset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fourfold.errors import InvalidOptionError

__all__ = ["Message", "OutRecord", "Rebalance", "Sink", "Source", "parse_kind"]


@dataclass(slots=True)
class Message:
    """One input record: where it sits in the log, its key and its raw payload (not frozen: a frozen
    dataclass costs 2 us per message to build, four times a plain one, on the hot path)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    #: when the log took it, ms since the epoch (Kafka's timestamp, a Redis entry id); None for a file
    log_time_ms: int | None = None
    #: the offset after this message (None: ``offset + 1``; a file's next line starts further on)
    end: int | None = None


@dataclass(slots=True)
class OutRecord:
    """One output record: a key (the event id) and an encoded value."""

    key: bytes
    value: bytes


class Rebalance(Protocol):
    """What a source calls when its consumer gains or loses partitions (from inside :meth:`Source.poll`)."""

    def assigned(self, partitions: Sequence[int]) -> Mapping[int, int | None]:
        """Restore the partitions' state; returns where each starts (None: the group's committed offset,
        or the log's beginning)."""
        ...

    def revoked(self, partitions: Sequence[int]) -> None:
        """Forget the partitions' in-memory state (another process may own them next)."""
        ...


@runtime_checkable
class Source(Protocol):
    #: the URL without a password, for messages and metrics
    url: str
    #: a stable name of the log (checkpoints are stored under it)
    name: str
    #: True once a bounded log (a file, not followed) has been read to its end
    finished: bool

    def start(self, listener: Rebalance) -> None:
        """Join the group; ``listener`` hears of every partition gained or lost from now on."""
        ...

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` in log order per partition; [] after ``timeout_s`` without any."""
        ...

    def seek(self, offsets: Mapping[int, int]) -> None:
        """Read each partition again from the given offset (a batch that could not be checkpointed)."""
        ...

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Record the next offset to read per partition (the group's progress, for lag and restarts)."""
        ...

    def committed(self, partitions: Sequence[int]) -> dict[int, int | None]:
        """The group's committed next offset per partition (None: nothing committed)."""
        ...

    def lag(self) -> dict[int, int]:
        """Messages behind per owned partition, as far as the log can tell."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    url: str

    def send(self, records: Sequence[OutRecord]) -> None:
        """Queue records for appending (in order)."""
        ...

    def flush(self) -> None:
        """Return once every record sent so far is durable; raise if any could not be written."""
        ...

    def mark(self) -> int | None:
        """A position to rewind to (a file's size), or None where appends cannot be taken back."""
        ...

    def rewind(self, mark: int) -> None:
        """Drop what was appended after ``mark`` (a batch whose checkpoint did not land)."""
        ...

    def close(self) -> None: ...


def parse_kind(url: str) -> str:
    """Which backend a source or sink URL names: ``kafka``, ``redis-stream`` or ``jsonl``."""
    if url.startswith("kafka://"):
        return "kafka"
    if url.startswith("redis-stream://"):
        return "redis-stream"
    if url == "-" or url.startswith("file://") or url.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise InvalidOptionError(
        f"a stream source or sink must be kafka://host:port/topic, redis-stream://host:port/db/name or a "
        f".jsonl path (- for stdin/stdout), got {url!r:.200}"
    )
