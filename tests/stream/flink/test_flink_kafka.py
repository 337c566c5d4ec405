"""The Flink runner end to end on Kafka: the tansu broker (``tests/kafka.py``), Flink's KafkaSource and
KafkaSink from the connector jars ``./dev test-flink`` extracts (flink-connector-kafka 4.0.1-2.0 and
kafka-clients 3.9.1, given as ``--flink-jars``), decisions equal to the local processor's on the same
events - at least once, and with ``--exactly-once`` (Flink's checkpoints + the transactional sink, read
``read_committed``)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from flinks import assert_same_decisions, local_oracle
from fourfold.stream import StreamOptions, StreamSummary, run_stream
from kafka import consume_all, create_topic, produce, tansu_broker
from streams import demo_events, write_jsonl

JARS = tuple(str(p) for p in sorted((Path(sys.prefix) / "kafka-jars").glob("*.jar")))


def test_the_connector_jars_are_there() -> None:
    assert [Path(j).name for j in JARS] == ["flink-connector-kafka.jar", "kafka-clients.jar"]


@pytest.mark.parametrize("exactly_once", [False, True])
def test_flink_on_kafka_decides_as_the_local_processor(
    tmp_path: Path, fraud_model: Path, exactly_once: bool
) -> None:
    events = demo_events(2000)
    expected, _ = local_oracle(tmp_path, fraud_model, write_jsonl(tmp_path / "events.jsonl", events))
    bad = ["not json {", json.dumps({**events[-1], "event_id": 9001, "amount": "x"})]
    with tansu_broker() as bootstrap:
        for topic, partitions in (("tx", 2), ("decisions", 1), ("dead", 1)):
            create_topic(bootstrap, topic, partitions)
        # keyed by the entity: a key's events in one partition, in order
        records = [(e["user_id"].encode(), json.dumps(e).encode()) for e in events]
        produce(bootstrap, "tx", records + [(b"u-bad", line.encode()) for line in bad])
        options = StreamOptions(
            str(fraud_model), source=f"kafka://{bootstrap}/tx", sink=f"kafka://{bootstrap}/decisions",
            dlq=f"kafka://{bootstrap}/dead", group="flink-test", engine="flink", flink_jars=JARS,
            parallelism=2, exactly_once=exactly_once, commit_interval_ms=500,
        )  # fmt: skip
        stop = threading.Event()
        done: list[StreamSummary | BaseException] = []

        def job() -> None:
            try:
                done.append(run_stream(options, stop=stop))
            except BaseException as exc:  # the test thread raises it
                done.append(exc)

        runner = threading.Thread(target=job, daemon=True)
        runner.start()
        try:
            got: list[Any] = []
            for _ in range(36):  # up to 3 minutes, failing at once when the job does
                got = consume_all(bootstrap, "decisions", expect=len(events), timeout_s=5)
                if len(got) >= len(events) or done:
                    break
            dead = consume_all(bootstrap, "dead", expect=len(bad), timeout_s=30 if not done else 1)
        finally:
            stop.set()
            runner.join(60)
        assert done, "the Flink job did not end within 60 s of its cancel"
        assert not isinstance(done[0], BaseException), done
    decisions: list[dict[str, Any]] = [json.loads(r[3]) for r in got]
    assert_same_decisions(decisions, expected)
    assert sorted(json.loads(r[3])["payload"] for r in dead) == sorted(bad)
