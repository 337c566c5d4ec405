"""Kafka as a stream source and sink (confluent-kafka / librdkafka).

URL: ``kafka://host:port[,host:port]/topic?option=value`` - options are librdkafka settings (dots as in
``session.timeout.ms``), applied to the consumer or producer after fourfold's defaults.

The source is one member of a consumer group: auto-commit is off (the processor commits after each
checkpoint), ``read_committed`` (never a decision of an aborted transaction's input), and on every
assignment the processor says where each partition starts (its checkpoint), so a partition that moves to
another process - possibly on another machine - continues exactly after the last checkpointed event.

The sink is an idempotent producer (``acks=all``): a retry never duplicates or reorders. With
``transactional_id`` it is transactional: :class:`KafkaTransaction` sends a batch's records and commits
its input offsets in one transaction (``send_offsets_to_transaction``), so ``read_committed`` readers
see each decision exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fourfold.errors import InvalidOptionError, UnavailableError
from fourfold.extras import require
from fourfold.stream.logs.base import Message, OutRecord, Rebalance

__all__ = ["KafkaSink", "KafkaSource", "KafkaTransaction", "parse_kafka_url"]

_PURPOSE = "Kafka streams"
_CONSUMER = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "enable.partition.eof": False,
    "fetch.wait.max.ms": 10,  # a fetch waits for data at most this long: latency, not throughput
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "max.poll.interval.ms": 300000,
}
_PRODUCER = {"enable.idempotence": True, "acks": "all", "linger.ms": 2, "compression.type": "none"}


def parse_kafka_url(url: str) -> tuple[str, str, dict[str, str]]:
    """``kafka://hosts/topic?options`` -> (bootstrap servers, topic, options)."""
    parts = urlsplit(url)
    topic = parts.path.strip("/")
    if parts.scheme != "kafka" or not parts.netloc or not topic or "/" in topic:
        raise InvalidOptionError(f"a Kafka URL is kafka://host:port[,host:port]/topic, got {url!r:.200}")
    return parts.netloc, topic, dict(parse_qsl(parts.query))


def _kafka() -> Any:
    return require("confluent_kafka", "stream", _PURPOSE)


class KafkaSource:
    """One consumer-group member reading ``topic``."""

    finished = False

    def __init__(self, url: str, *, group: str, client_id: str = "fourfold") -> None:
        kafka = _kafka()
        self.bootstrap, self.topic, options = parse_kafka_url(url)
        self.url = url.split("?")[0]
        self.name = f"kafka-{self.topic}"
        self._kafka = kafka
        conf: dict[str, Any] = {**_CONSUMER, "bootstrap.servers": self.bootstrap, "group.id": group}
        conf["client.id"] = client_id
        conf.update(options)
        self.consumer = kafka.Consumer(conf)
        self._listener: Rebalance | None = None
        self._owned: set[int] = set()
        self._seen: dict[int, int] = {}  # the next offset after the newest message read, per partition
        self._revoking = False

    def start(self, listener: Rebalance) -> None:
        self._listener = listener
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        assert self._listener is not None
        starts = self._listener.assigned([tp.partition for tp in partitions])
        for tp in partitions:
            start = starts.get(tp.partition)
            if start is not None:
                tp.offset = start
            self._owned.add(tp.partition)
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        assert self._listener is not None
        gone = [tp.partition for tp in partitions]
        self._revoking = True  # first the listener: it may still commit what it delivered there
        try:
            self._listener.revoked(gone)
        finally:
            self._revoking = False
        self._owned.difference_update(gone)
        for p in gone:
            self._seen.pop(p, None)
        consumer.unassign()

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        try:
            raw = self.consumer.consume(num_messages=max_messages, timeout=timeout_s)
        except self._kafka.KafkaException as exc:
            raise UnavailableError(f"the Kafka source {self.url} failed: {exc}") from None
        if not raw:
            return []
        errors = [err for m in raw if (err := m.error()) is not None]
        for err in errors:
            if err.fatal():
                raise UnavailableError(f"the Kafka source {self.url} failed: {err.str()}")
        # one comprehension, not a loop of statements: this runs for every message
        out = [
            Message(
                m.partition(),
                m.offset(),
                m.key(),
                m.value() or b"",
                t[1] if (t := m.timestamp())[0] else None,
            )
            for m in raw
            if not errors or m.error() is None  # an error is informational (end of partition, a broker back)
        ]
        owned = self._owned
        if any(m.partition not in owned for m in out):
            out = [m for m in out if m.partition in owned]  # fetched before a revoke
        self._seen.update({m.partition: m.offset + 1 for m in out})
        return out

    def seek(self, offsets: Mapping[int, int]) -> None:
        for p, off in offsets.items():
            if p in self._owned:
                self.consumer.seek(self._kafka.TopicPartition(self.topic, p, off))

    def commit(self, offsets: Mapping[int, int]) -> None:
        tps = [self._kafka.TopicPartition(self.topic, p, o) for p, o in offsets.items() if p in self._owned]
        if tps:
            # progress is in the checkpoint; a failed commit is carried by the next one
            with contextlib.suppress(self._kafka.KafkaException):  # synchronous while giving them up
                self.consumer.commit(offsets=tps, asynchronous=not self._revoking)

    def committed(self, partitions: Sequence[int]) -> dict[int, int | None]:
        tps = [self._kafka.TopicPartition(self.topic, p) for p in partitions]
        try:
            got = self.consumer.committed(tps, timeout=10)
        except self._kafka.KafkaException as exc:
            raise UnavailableError(f"the Kafka source {self.url} failed: {exc}") from None
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in got}

    def lag(self) -> dict[int, int]:
        """Produced minus read, per owned partition: the broker's high watermark, corrected upward by what
        was read (some brokers report it low), minus the next offset read."""
        out: dict[int, int] = {}
        for p in sorted(self._owned):
            try:
                _, high = self.consumer.get_watermark_offsets(
                    self._kafka.TopicPartition(self.topic, p), timeout=1, cached=False
                )
            except self._kafka.KafkaException:
                continue
            pos = self._seen.get(p)
            if pos is None:
                continue
            out[p] = max(0, max(high, pos) - pos)
        return out

    def group_metadata(self) -> Any:
        return self.consumer.consumer_group_metadata()

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self.consumer.close()


class KafkaSink:
    """Appends to ``topic`` through an idempotent (optionally transactional) producer."""

    def __init__(self, url: str, *, transactional_id: str | None = None, producer: Any = None) -> None:
        kafka = _kafka()
        self._kafka = kafka
        self.bootstrap, self.topic, options = parse_kafka_url(url)
        self.url = url.split("?")[0]
        self.transactional = transactional_id is not None
        self._errors: list[str] = []
        if producer is not None:
            self.producer = producer
            return
        conf: dict[str, Any] = {**_PRODUCER, "bootstrap.servers": self.bootstrap}
        # a delivery report for a failed record only: a Python callback per delivered record costs a
        # microsecond each on the hot path; flush() then raises with what failed
        conf["on_delivery"] = self._delivered
        conf["delivery.report.only.error"] = True
        if transactional_id is not None:
            conf["transactional.id"] = transactional_id
            conf["transaction.timeout.ms"] = 60000
        conf.update(options)
        self.producer = kafka.Producer(conf)
        if transactional_id is not None:
            try:
                self.producer.init_transactions(30)  # fences an earlier process with the same id
            except self._kafka.KafkaException as exc:
                raise UnavailableError(f"the Kafka sink {self.url} failed: {exc}") from None

    def sharing(self, url: str) -> KafkaSink:
        """A sink for another topic of the same cluster through this producer (one transaction)."""
        bootstrap, _, _ = parse_kafka_url(url)
        if bootstrap != self.bootstrap:
            raise InvalidOptionError(f"{url!r:.200} is not on the cluster of {self.url}")
        other = KafkaSink(url, producer=self.producer)
        other.transactional = self.transactional
        other._errors = self._errors
        return other

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err.str()}")

    def send(self, records: Sequence[OutRecord]) -> None:
        produce, topic = self.producer.produce, self.topic
        for r in records:
            while True:
                try:
                    produce(topic, r.value, r.key)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self) -> None:
        left = self.producer.flush(30)
        if left or self._errors:
            shown = "; ".join(self._errors[:3]) or f"{left} records not delivered within 30 s"
            self._errors.clear()
            raise UnavailableError(f"the Kafka sink {self.url} failed: {shown}")

    def mark(self) -> int | None:
        return None

    def rewind(self, mark: int) -> None:
        raise InvalidOptionError("a Kafka topic cannot be rewound")

    def close(self) -> None:
        self.producer.flush(10)


class KafkaTransaction:
    """One batch's records and input offsets as one Kafka transaction (``--exactly-once``)."""

    def __init__(self, sink: KafkaSink, source: KafkaSource) -> None:
        if not sink.transactional:
            raise InvalidOptionError("exactly-once needs a transactional Kafka sink")
        self.sink, self.source = sink, source
        self._kafka = sink._kafka

    def begin(self) -> None:
        self.sink.producer.begin_transaction()

    def abort(self) -> None:
        try:
            self.sink.producer.abort_transaction(30)
        except self._kafka.KafkaException as exc:
            raise UnavailableError(f"the Kafka transaction on {self.sink.url} failed: {exc}") from None

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit the transaction with ``offsets`` (next offsets of the input) as the group's progress."""
        tps = [self._kafka.TopicPartition(self.source.topic, p, o) for p, o in offsets.items()]
        producer = self.sink.producer
        try:
            if tps:
                producer.send_offsets_to_transaction(tps, self.source.group_metadata(), 30)
            producer.commit_transaction(30)
        except self._kafka.KafkaException as exc:
            err = exc.args[0]
            if err.txn_requires_abort():
                producer.abort_transaction(30)
            raise UnavailableError(f"the Kafka transaction on {self.sink.url} failed: {err.str()}") from None
        if self.sink._errors:
            shown = "; ".join(self.sink._errors[:3])
            self.sink._errors.clear()
            raise UnavailableError(f"the Kafka sink {self.sink.url} failed: {shown}")
