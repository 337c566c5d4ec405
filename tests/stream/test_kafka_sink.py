"""The Kafka sink reports a record the log did not take: flush raises naming the topic, never a silent
drop (delivery reports come for failed records only)."""

from __future__ import annotations

import socket

import pytest

from fourfold.errors import UnavailableError
from fourfold.stream.logs.base import OutRecord
from fourfold.stream.logs.kafka import KafkaSink


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_record_no_broker_took_makes_flush_raise_with_the_topic() -> None:
    port = closed_port()
    sink = KafkaSink(f"kafka://127.0.0.1:{port}/decisions?message.timeout.ms=500&log_level=0")
    try:
        sink.send([OutRecord(b"e1", b'{"event_id": 1}'), OutRecord(b"e2", b'{"event_id": 2}')])
        with pytest.raises(UnavailableError, match=r"kafka://127\.0\.0\.1:\d+/decisions failed: decisions: "):
            sink.flush()
        sink.flush()  # the failure was reported once; nothing is left queued
    finally:
        sink.producer.flush(0)
