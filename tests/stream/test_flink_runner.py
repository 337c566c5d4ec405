"""The Flink runner's parts that need no Flink (run by the main suite; the mini-cluster tests are in
tests/stream/flink, run by ./dev test-flink): its options, its configuration, the error without PyFlink,
and its per-key path (KeyedScoring, fed each key's state blob back as Flink's ValueState would) against
the local processor on the same log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flinks import assert_same_dead_letters, assert_same_decisions, local_oracle
from fourfold.errors import InvalidOptionError
from fourfold.stream import StreamOptions
from fourfold.stream.flink.config import flink_configuration
from fourfold.stream.flink.job import FlinkMissingError, _spec, require_pyflink
from fourfold.stream.flink.keyed import KeyedScoring, key_of
from streams import demo_events, write_jsonl


def test_kafka_on_flink_needs_the_connector_jars() -> None:
    with pytest.raises(InvalidOptionError, match="--flink-jars"):
        StreamOptions("m", "kafka://127.0.0.1:9092/tx", "out.jsonl", engine="flink")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"engine": "spark"}, "--engine must be one of local, flink"),
        ({"flink_jars": ("a.jar",)}, "--flink-jars is for --engine flink"),
        ({"parallelism": 2}, "--parallelism is for --engine flink"),
        ({"engine": "flink", "parallelism": 0}, "--parallelism must be 1..1024"),
        ({"engine": "flink", "state_backend": "forst"}, "--state-backend must be one of hashmap, rocksdb"),
        ({"engine": "flink", "flink_jars": ("/no/such.jar",)}, "is not a file"),
        ({"engine": "flink", "batch_size": 100}, "--batch-size is for the local engine"),
        ({"engine": "flink", "metrics_port": 9100}, "--metrics-port is for the local engine"),
        ({"engine": "flink", "flink_conf": (("Bad Key", "1"),)}, "--flink-conf takes KEY=VALUE"),
    ],
)
def test_flink_options_are_checked(kw: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        StreamOptions("m", "in.jsonl", "out.jsonl", **kw)  # type: ignore[arg-type]


def test_redis_streams_are_not_for_flink() -> None:
    with pytest.raises(InvalidOptionError, match="Kafka or files"):
        StreamOptions("m", "redis-stream://127.0.0.1:6379/0/tx", "out.jsonl", engine="flink")


def test_the_configuration_is_set_on_purpose(tmp_path: Path) -> None:
    jar = tmp_path / "flink-connector-kafka.jar"
    jar.write_bytes(b"")
    o = StreamOptions("m", "kafka://h:1/tx", "kafka://h:1/out", engine="flink", flink_jars=(str(jar),),
                      parallelism=3, commit_interval_ms=250, state_backend="rocksdb",
                      flink_conf=(("python.execution-mode", "thread"),))  # fmt: skip
    conf = flink_configuration(o, "/venv/bin/python")
    assert conf["parallelism.default"] == "3"
    assert conf["python.executable"] == "/venv/bin/python"
    assert conf["python.fn-execution.bundle.size"] == "100000"
    assert conf["execution.checkpointing.interval"] == "250 ms"
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["pipeline.jars"] == jar.resolve().as_uri()
    assert conf["python.execution-mode"] == "thread"  # --flink-conf over fourfold's settings
    default = StreamOptions("m", "in.jsonl", "out.jsonl", engine="flink")
    assert 1 <= default.flink_parallelism <= 8
    assert flink_configuration(default, "p")["execution.checkpointing.interval"] == "1000 ms"


def test_without_pyflink_the_error_says_how_to_get_the_flink_environment(
    tmp_path: Path, fraud_model: Path
) -> None:
    with pytest.raises(FlinkMissingError, match=r"\./dev test-flink"):
        require_pyflink()
    events = write_jsonl(tmp_path / "events.jsonl", demo_events(5))
    cmd = [sys.executable, "-m", "fourfold.cli.main", "stream", str(fraud_model), "--source", str(events),
           "--sink", str(tmp_path / "out.jsonl"), "--engine", "flink"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "./dev test-flink" in run.stderr
    assert "Traceback" not in run.stderr
    cmd_kafka = [*cmd[:6], "kafka://127.0.0.1:9/tx", *cmd[7:]]
    run = subprocess.run(cmd_kafka, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "needs --flink-jars" in run.stderr


def test_the_keyed_path_equals_the_local_processor(tmp_path: Path, fraud_model: Path) -> None:
    """What ScoreEvents does per event, with the keys' state blobs kept as Flink's ValueState keeps them
    (and a fresh worker restoring every key from its blob half-way, as after a restore)."""
    events = demo_events(1500)
    late = events[-1]["event_time"] - 3_600_000
    bad = ["not json {", json.dumps({**events[-1], "event_id": 9001, "amount": "x"}),
           json.dumps({**events[-1], "event_id": 9002, "event_time": late})]  # fmt: skip
    lines = [json.dumps(e) for e in events] + bad
    log = write_jsonl(tmp_path / "events.jsonl", lines)
    expected, expected_dead = local_oracle(tmp_path, fraud_model, log)
    spec = _spec(StreamOptions(str(fraud_model), str(log), str(tmp_path / "f.jsonl"), engine="flink"))
    worker = KeyedScoring(spec)
    worker.open()
    state: dict[str, bytes] = {}
    decisions, dead = [], []
    for i, line in enumerate(lines):
        if i == 700:  # a restore: a new worker, the state only in the blobs
            worker = KeyedScoring(spec)
            worker.open()
        key = key_of(line, spec.key_column)
        out = worker.process(line, state.get(key))
        if out.state is not None:
            state[key] = out.state
        if out.decision is not None:
            decisions.append(json.loads(out.decision))
        if out.dead is not None:
            dead.append(json.loads(out.dead))
    assert_same_decisions(decisions, expected)
    assert_same_dead_letters(dead, expected_dead)
