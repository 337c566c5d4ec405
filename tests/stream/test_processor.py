"""The processor between checkpoints: records go out per batch, the state and offsets only every
``commit_interval_ms``; a checkpoint the store refuses, or a process lost between two, is redone from the
last checkpoint - nothing lost, no event folded twice, a file sink cut back to its mark."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fourfold import Predictor, load_package
from fourfold.features.stores.sqlite import SQLiteStore
from fourfold.stream.logs.jsonl import JsonlSink, JsonlSource
from fourfold.stream.processor import StreamProcessor
from streams import assert_parity, demo_events, offline, read_jsonl, write_jsonl

_OPEN: list[StreamProcessor] = []


@pytest.fixture(autouse=True)
def _close_parts() -> Iterator[None]:
    yield
    while _OPEN:
        proc = _OPEN.pop()
        for part in (proc.source, *proc.sinks):
            if part is not None:
                part.close()


def processor(tmp: Path, model: Path, store: SQLiteStore, **kw: object) -> StreamProcessor:
    pkg = load_package(model)
    source = JsonlSource(str(tmp / "events.jsonl"))
    sinks = [JsonlSink(str(tmp / "out.jsonl")), JsonlSink(str(tmp / "dead.jsonl"))]
    proc = StreamProcessor(Predictor(pkg), pkg.features(), source, sinks, store, group="g", **kw)  # type: ignore[arg-type]
    _OPEN.append(proc)
    proc.start()
    return proc


def run_to_end(proc: StreamProcessor) -> int:
    decided = 0
    while not (proc.source.finished and proc.settled):
        decided += proc.step().decided
    return decided


def test_a_checkpoint_the_store_refuses_is_read_again_and_nothing_is_lost_or_doubled(
    tmp_path: Path, fraud_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = demo_events(3000)
    write_jsonl(tmp_path / "events.jsonl", events)
    store = SQLiteStore(tmp_path / "state.db", timeout_s=0.05)
    proc = processor(tmp_path, fraud_model, store, batch_size=400, commit_interval_ms=0)
    for _ in range(3):
        proc.step()
    before = (tmp_path / "out.jsonl").stat().st_size
    locker = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the database: the checkpoint is refused
    with caplog.at_level(logging.WARNING, "fourfold.stream"):
        proc.step()
    assert "the checkpoint could not be written" in caplog.text
    assert (tmp_path / "out.jsonl").stat().st_size == before  # the batch's records were taken back
    locker.execute("ROLLBACK")
    locker.close()
    run_to_end(proc)
    decisions = read_jsonl(tmp_path / "out.jsonl")
    assert [d["event_id"] for d in decisions] == [e["event_id"] for e in events]  # each once, in order
    assert_parity(decisions, offline(events, fraud_model))
    store.close()


def test_a_process_lost_between_checkpoints_is_redone_from_the_last_one(
    tmp_path: Path, fraud_model: Path
) -> None:
    events = demo_events(4000)
    write_jsonl(tmp_path / "events.jsonl", events)
    store = SQLiteStore(tmp_path / "state.db")
    first = processor(tmp_path, fraud_model, store, batch_size=300, commit_interval_ms=60_000)
    done = sum(first.step().decided for _ in range(3))
    assert first.checkpoint()
    for _ in range(4):  # read, scored and sent, never checkpointed: then the process is gone
        first.step()
    assert not first.settled
    for sink in first.sinks:  # what a crash leaves: whatever reached the file, nothing more
        assert sink is not None
        sink.flush()
    second = processor(tmp_path, fraud_model, store, batch_size=300, commit_interval_ms=60_000)
    assert run_to_end(second) == len(events) - done  # from the last checkpoint on, not from the start
    second.checkpoint()
    decisions = read_jsonl(tmp_path / "out.jsonl")
    assert [d["event_id"] for d in decisions] == [e["event_id"] for e in events]  # the file was cut back
    assert_parity(decisions, offline(events, fraud_model))
    store.close()


def test_a_key_changed_in_many_batches_is_written_once_per_checkpoint(
    tmp_path: Path, fraud_model: Path
) -> None:
    events = [{**e, "user_id": "u_hot"} for e in demo_events(1200)]
    write_jsonl(tmp_path / "events.jsonl", events)
    store = SQLiteStore(tmp_path / "state.db")
    writes: list[int] = []
    transact = store.transact

    def counting(batch, **kw):  # type: ignore[no-untyped-def]
        if any(w.namespace == "fraud" for w in batch):  # a checkpoint (a claim writes the epoch only)
            writes.append(sum(len(w.rows) for w in batch if w.namespace == "fraud"))
        return transact(batch, **kw)

    store.transact = counting  # type: ignore[method-assign]
    proc = processor(tmp_path, fraud_model, store, batch_size=100, commit_interval_ms=60_000)
    assert run_to_end(proc) == len(events)
    assert writes == [1]  # twelve batches, one checkpoint at the end (idle), the one key once
    assert_parity(read_jsonl(tmp_path / "out.jsonl"), offline(events, fraud_model))
    store.close()


def test_slow_checkpoints_are_spaced_out_unless_an_interval_was_given(
    tmp_path: Path, fraud_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time as _time

    from fourfold.stream import checkpoints

    events = demo_events(2000)
    write_jsonl(tmp_path / "events.jsonl", events)
    commit = checkpoints.Checkpoints.commit

    def slow(self: object, *args: object, **kw: object) -> object:
        _time.sleep(0.12)  # a store under load: each checkpoint takes 120 ms
        return commit(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoints.Checkpoints, "commit", slow)
    store = SQLiteStore(tmp_path / "state.db")
    default = processor(tmp_path, fraud_model, store, batch_size=200)
    assert default._spacing == pytest.approx(0.25)
    default.step()
    default.checkpoint()
    assert 0.36 <= default._spacing <= 0.5  # three times the checkpoint: a quarter of the time at most
    run_to_end(default)
    assert [d["event_id"] for d in read_jsonl(tmp_path / "out.jsonl")] == [e["event_id"] for e in events]
    store.close()

    store = SQLiteStore(tmp_path / "state2.db")
    (tmp_path / "out.jsonl").unlink()
    given = processor(tmp_path, fraud_model, store, batch_size=200, commit_interval_ms=50)
    given.step()
    given.checkpoint()
    assert given._spacing == pytest.approx(0.05)  # the interval asked for is kept
    store.close()
