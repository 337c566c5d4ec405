"""The stream on the embedded default - a JSONL file in, JSONL decisions out, SQLite state - against the
offline engine and the predictor, with bad events, restarts and kill -9 crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fourfold.demo.features import FRAUD_FEATURES
from fourfold.errors import InvalidOptionError
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import open_store
from fourfold.stream import StreamOptions, run_stream
from streams import assert_parity, demo_events, offline, read_jsonl, write_jsonl


def options(tmp: Path, model: Path, **kw: Any) -> StreamOptions:
    store = f"sqlite:///{tmp / 'state.db'}"
    return StreamOptions(str(model), source=str(tmp / "events.jsonl"), sink=str(tmp / "out.jsonl"),
                         dlq=str(tmp / "dead.jsonl"), store=store, **kw)  # fmt: skip


def test_decisions_equal_the_offline_engine_and_the_predictor(tmp_path: Path, fraud_model: Path) -> None:
    events = demo_events(6000)
    write_jsonl(tmp_path / "events.jsonl", events)
    summary = run_stream(options(tmp_path, fraud_model, batch_size=500))
    assert summary.decided == len(events)
    assert summary.dead_letters == {}
    decisions = read_jsonl(tmp_path / "out.jsonl")
    assert [d["event_id"] for d in decisions] == [e["event_id"] for e in events]  # one each, in order
    assert_parity(decisions, offline(events, fraud_model))
    first = decisions[0]
    assert set(first) == {"event_id", "score", "action", "model_version", "event_time", "scored_at", "key",
                          "features"}  # fmt: skip
    assert first["event_time"] == events[0]["event_time"]
    assert first["key"] == events[0]["user_id"]


def test_bad_events_go_to_the_dead_letters_with_reasons_and_nothing_else_is_dropped(
    tmp_path: Path, fraud_model: Path
) -> None:
    events = demo_events(400)
    good = [json.dumps(e) for e in events]
    t_last = events[-1]["event_time"]
    u = events[-1]["user_id"]
    bad = {
        "not json {": "malformed",
        "[1, 2]": "malformed",
        json.dumps({**events[-1], "event_id": 9001, "user_id": None}): "invalid",
        json.dumps(
            {k: v for k, v in events[-1].items() if k != "event_time"} | {"event_id": 9002}
        ): "invalid",
        json.dumps({**events[-1], "event_id": 9003, "amount": "12.5"}): "invalid",
        json.dumps({**events[-1], "event_id": 9004, "amount": 1e300}): "invalid",  # past float32
        json.dumps({**events[-1], "event_id": 9005, "txn_count_10m": 0}): "invalid",  # a computed field
        json.dumps({**events[-1], "event_id": 9006, "user_id": u, "event_time": t_last - 3_600_000}): "late",
    }
    lines = good + list(bad)
    write_jsonl(tmp_path / "events.jsonl", lines)
    summary = run_stream(options(tmp_path, fraud_model))
    dead = read_jsonl(tmp_path / "dead.jsonl")
    decided = read_jsonl(tmp_path / "out.jsonl")
    assert summary.decided + sum(summary.dead_letters.values()) == len(lines)
    assert len(decided) == len(good)
    assert [d["payload"] for d in dead] == list(bad)  # the original text, as it came
    assert [d["code"] for d in dead] == list(bad.values())
    reasons = [d["reason"] for d in dead]
    assert "not valid JSON" in reasons[0]
    assert "JSON object" in reasons[1]
    assert "user_id" in reasons[2]
    assert "event_time" in reasons[3]
    assert "amount" in reasons[4]
    assert "str" in reasons[4]
    assert "amount" in reasons[5]
    assert "txn_count_10m" in reasons[6]
    assert "later than the allowed lateness" in reasons[7]
    assert all(d["source"] == str(tmp_path / "events.jsonl") and d["offset"] >= 0 for d in dead)


_MISSING = object()


@pytest.mark.parametrize("field", ["amount", "merchant_category", "device"])
@pytest.mark.parametrize("value", [None, True, "12", [1.0], {"v": 1}, _MISSING, 1e300])
def test_a_request_field_the_model_refuses_gets_the_model_checks_reason(
    tmp_path: Path, fraud_model: Path, field: str, value: Any
) -> None:
    """The reason every pattern gives (``Predictor.check``, ``/predict``, batch): not the engine's own
    wording, for a field the windows read too (amount) or only the model (device); the windows still fold
    an event whose window columns are good (the offline engine does too)."""
    from fourfold import Predictor, load_package

    events = demo_events(50)
    bad = {k: v for k, v in events[-1].items() if k != field} | {"event_id": 9001}
    if value is not _MISSING:
        bad[field] = value
    write_jsonl(tmp_path / "events.jsonl", [json.dumps(e) for e in events] + [json.dumps(bad)])
    summary = run_stream(options(tmp_path, fraud_model))
    [letter] = read_jsonl(tmp_path / "dead.jsonl")
    assert summary.decided == len(events)
    assert letter["code"] == "invalid"
    pkg = load_package(fraud_model)
    request = {f.name: f.field for f in FRAUD_FEATURES.request}
    row = {name: bad[src] for name, src in request.items() if src in bad}
    row |= {n: 0.0 for n in Predictor(pkg).signature.feature_names if n not in request}
    if value is _MISSING:  # the assembly's rule, as /predict's 422 words it
        from fourfold.errors import InputError
        from fourfold.features.assemble import Assembly

        with pytest.raises(InputError) as err:
            Assembly(Predictor(pkg).signature.feature_names, FRAUD_FEATURES).check_fields(
                bad, where="the event", unknown=False
            )
        assert letter["reason"] == str(err.value)
    else:
        assert letter["reason"] == Predictor(pkg).check([row]).reason(0)
    assert field in letter["reason"]


def test_a_restart_continues_after_the_checkpoint_without_counting_an_event_twice(
    tmp_path: Path, fraud_model: Path
) -> None:
    events = demo_events(3000)
    write_jsonl(tmp_path / "events.jsonl", events[:1800])
    assert run_stream(options(tmp_path, fraud_model, batch_size=256)).decided == 1800
    with (tmp_path / "events.jsonl").open("a") as f:  # the log grows while the stream is stopped
        f.writelines(json.dumps(e) + "\n" for e in events[1800:])
    assert run_stream(options(tmp_path, fraud_model, batch_size=256)).decided == 1200
    decisions = read_jsonl(tmp_path / "out.jsonl")
    assert [d["event_id"] for d in decisions] == [e["event_id"] for e in events]
    assert_parity(decisions, offline(events, fraud_model))


def test_the_online_store_answers_with_the_streams_windows(tmp_path: Path, fraud_model: Path) -> None:
    events = demo_events(2000)
    write_jsonl(tmp_path / "events.jsonl", events)
    run_stream(options(tmp_path, fraud_model))
    user = Counter(e["user_id"] for e in events).most_common(1)[0][0]
    at = events[-1]["event_time"] + 1
    with closing(open_store(f"sqlite:///{tmp_path / 'state.db'}")) as store:
        [got] = OnlineFeatures(FRAUD_FEATURES, store).get([user], at_ms=at)
    # the features the offline engine gives a next event of that user at `at`
    probe = {**events[-1], "event_id": -1, "user_id": user, "event_time": at}
    expected, _ = offline([*events, probe], fraud_model)[-1]
    assert got is not None
    for name in ("txn_count_10m", "txn_count_1h", "amount_sum_1h", "merchants_1d", "amount_max_1d"):
        assert got[name] == pytest.approx(expected[name]), name


def test_kill_9_mid_stream_loses_nothing_and_writes_each_decision_once(
    tmp_path: Path, fraud_model: Path
) -> None:
    events = demo_events(40_000)
    write_jsonl(tmp_path / "events.jsonl", events)
    # small batches and checkpoints: a run decides a few thousand events before it is killed
    args = [sys.executable, "-m", "fourfold.cli.main", "stream", str(fraud_model), "--source",
            str(tmp_path / "events.jsonl"), "--sink", str(tmp_path / "out.jsonl"), "--dlq",
            str(tmp_path / "dead.jsonl"), "--store", f"sqlite:///{tmp_path / 'state.db'}",
            "--batch-size", "300", "--commit-interval-ms", "20"]  # fmt: skip
    rng = np.random.default_rng(7)
    out = tmp_path / "out.jsonl"
    kills = 0
    errors = tmp_path / "stderr.log"
    for _ in range(200):  # each run gets past the last one before it is killed: it ends
        with errors.open("wb") as err:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        start = out.stat().st_size if out.exists() else 0
        deadline = time.monotonic() + 60
        # past where the last run got to (a restart first cuts the file back to its checkpoint): by then
        # this run has checkpointed, however loaded the machine, so every kill leaves some progress
        while proc.poll() is None and (not out.exists() or out.stat().st_size <= start):
            assert time.monotonic() < deadline, "the stream made no progress"
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.02, 0.12)))  # the job is quick: kill it within its first batches
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    else:
        raise AssertionError("the stream never finished")
    assert proc.returncode == 0, errors.read_text()
    assert kills >= 5
    decisions = read_jsonl(out)
    ids = [d["event_id"] for d in decisions]
    assert ids == [e["event_id"] for e in events]  # every event once, in order: the file was cut back
    assert_parity(decisions, offline(events, fraud_model))


def test_sigterm_finishes_the_batch_and_exits(tmp_path: Path, fraud_model: Path) -> None:
    events = demo_events(500)
    write_jsonl(tmp_path / "events.jsonl", events)
    args = [sys.executable, "-m", "fourfold.cli.main", "stream", str(fraud_model), "--source",
            str(tmp_path / "events.jsonl"), "--sink", str(tmp_path / "out.jsonl"), "--follow",
            "--store", f"sqlite:///{tmp_path / 'state.db'}"]  # fmt: skip
    errors = tmp_path / "stderr.log"
    with errors.open("wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    out = tmp_path / "out.jsonl"
    deadline = time.monotonic() + 60
    try:
        while not out.exists() or out.read_bytes().count(b"\n") < len(events):
            assert proc.poll() is None, errors.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "decided 500 events" in errors.read_text()
    assert len(read_jsonl(out)) == len(events)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"exactly_once": True}, "--exactly-once needs Kafka"),
        ({"batch_size": 0}, "--batch-size"),
        ({"threshold": 1.5}, "--threshold"),
        ({"group": "bad group"}, "--group"),
        ({"metrics_port": 70000}, "--metrics-port"),
        ({"metrics_host": ""}, "--metrics-host"),
        ({"metrics_host": "127.0.0.1 9100"}, "--metrics-host"),
        ({"commit_interval_ms": -1}, "--commit-interval-ms"),
        ({"commit_interval_ms": 3_600_000}, "--commit-interval-ms"),
        ({"sink": "out.txt"}, "kafka://"),
        ({"dlq": "same.jsonl", "sink": "same.jsonl"}, "--dlq must not be the --sink"),
        ({"follow": True, "source": "kafka://127.0.0.1:1/tx"}, "--follow"),
    ],
)
def test_options_are_checked_before_anything_opens(kw: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"model": "m", "source": "in.jsonl", "sink": "out.jsonl"}
    with pytest.raises(InvalidOptionError, match=message):
        StreamOptions(**(base | kw))


def test_a_batch_is_2000_events_and_10000_with_exactly_once_unless_given() -> None:
    files = {"model": "m", "source": "in.jsonl", "sink": "out.jsonl"}
    kafka = {"model": "m", "source": "kafka://127.0.0.1:1/tx", "sink": "kafka://127.0.0.1:1/out"}
    assert StreamOptions(**files).events_per_batch == 2000
    assert StreamOptions(**kafka, exactly_once=True).events_per_batch == 10_000
    assert StreamOptions(**kafka, exactly_once=True, batch_size=300).events_per_batch == 300
    with pytest.raises(InvalidOptionError, match="--batch-size"):
        StreamOptions(**files, batch_size=100_001)


def test_a_stream_continues_from_the_state_a_batch_job_materialized(
    tmp_path: Path, fraud_model: Path
) -> None:
    """Batch + Online, then streaming: the store holds every user's windows from a batch materialize (its
    events numbered its own way); a stream over the new events reads them and goes on - the same features
    and scores as the offline engine over the whole history."""
    import pyarrow as pa

    events = demo_events(5000)
    history, new = events[:4000], events[4000:]
    log = pa.Table.from_pylist(history)
    log = log.set_column(log.schema.get_field_index("event_time"), "event_time",
                         log["event_time"].cast(pa.timestamp("ms", tz="UTC")))  # fmt: skip
    with closing(open_store(f"sqlite:///{tmp_path / 'state.db'}")) as store:
        OnlineFeatures(FRAUD_FEATURES, store).materialize(log)
    write_jsonl(tmp_path / "events.jsonl", new)  # offsets start again at 0: below the stored numbers
    summary = run_stream(options(tmp_path, fraud_model, batch_size=300))
    assert summary.decided == len(new)
    assert summary.dead_letters == {}
    expected = offline(events, fraud_model)
    assert_parity(read_jsonl(tmp_path / "out.jsonl"), {e["event_id"]: expected[e["event_id"]] for e in new})
