"""``fourfold stream --engine flink`` on Flink's local mini-cluster (run by ``./dev test-flink`` in the
Flink environment, never collected by the main suite): the same decisions and dead letters as the local
stream processor on the same log, a JSONL file in and a directory of part files out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flinks import assert_same_dead_letters, assert_same_decisions, local_oracle, read_parts
from fourfold.errors import InvalidOptionError
from fourfold.stream import StreamOptions, run_stream
from streams import demo_events, write_jsonl

Rows = list[dict[str, Any]]


def flink(tmp: Path, model: Path, events: Path, **kw: Any) -> tuple[Rows, Rows]:
    """The Flink runner on ``events``; a file sink is a directory (of part files) with Flink."""
    out, dead = tmp / "flink-out.jsonl", tmp / "flink-dead.jsonl"
    summary = run_stream(StreamOptions(str(model), source=str(events), sink=str(out), dlq=str(dead),
                                       engine="flink", parallelism=2, **kw))  # fmt: skip
    decisions, dead_letters = read_parts(out), read_parts(dead)
    assert summary.decided == len(decisions)
    return decisions, dead_letters


@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
def test_flink_decides_each_event_as_the_local_processor_does(
    tmp_path: Path, fraud_model: Path, backend: str
) -> None:
    events = write_jsonl(tmp_path / "events.jsonl", demo_events(3000))
    expected, _ = local_oracle(tmp_path, fraud_model, events)
    got, dead = flink(tmp_path, fraud_model, events, state_backend=backend)
    assert dead == []
    assert_same_decisions(got, expected)
    assert {d["model_version"] for d in got} == {expected[0]["model_version"]}


def test_bad_events_go_to_the_dead_letters_with_the_local_reasons_and_nothing_else_is_dropped(
    tmp_path: Path, fraud_model: Path
) -> None:
    events = demo_events(400)
    t_last, u = events[-1]["event_time"], events[-1]["user_id"]
    bad = [
        "not json {",
        "[1, 2]",
        json.dumps({**events[-1], "event_id": 9001, "user_id": None}),
        json.dumps({k: v for k, v in events[-1].items() if k != "event_time"} | {"event_id": 9002}),
        json.dumps({**events[-1], "event_id": 9003, "amount": "12.5"}),
        json.dumps({**events[-1], "event_id": 9004, "amount": 1e300}),  # past float32: the model's check
        json.dumps({**events[-1], "event_id": 9005, "txn_count_10m": 0}),  # a computed field
        json.dumps({**events[-1], "event_id": 9006, "user_id": u, "event_time": t_last - 3_600_000}),  # late
        json.dumps({**events[-1], "event_id": 9007, "user_id": 42}),  # an int key: made a string
    ]
    log = write_jsonl(tmp_path / "events.jsonl", [json.dumps(e) for e in events] + bad)
    expected, expected_dead = local_oracle(tmp_path, fraud_model, log)
    got, dead = flink(tmp_path, fraud_model, log)
    assert len(got) + len(dead) == len(events) + len(bad)
    assert_same_decisions(got, expected)
    assert_same_dead_letters(dead, expected_dead)
    assert sorted(d["code"] for d in dead) == sorted(["malformed"] * 2 + ["invalid"] * 5 + ["late"])
    assert {d["offset"] for d in dead} == {-1}  # Flink's sources do not tell a Python function the position


def test_a_file_sink_must_be_a_directory_with_flink(tmp_path: Path, fraud_model: Path) -> None:
    events = write_jsonl(tmp_path / "events.jsonl", demo_events(10))
    (tmp_path / "out.jsonl").write_text("")
    with pytest.raises(InvalidOptionError, match="directory of JSONL part files"):
        run_stream(StreamOptions(str(fraud_model), source=str(events), sink=str(tmp_path / "out.jsonl"),
                                 engine="flink"))  # fmt: skip
