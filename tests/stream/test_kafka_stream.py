"""The stream on a real Kafka-protocol broker (tansu): two processes in one group over four partitions,
kill -9 at random moments and restarts, then every event decided - exactly once in ``read_committed``
output with ``--exactly-once`` - with the offline engine's features and the predictor's scores."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fourfold.online.settings import ServeSettings
from fourfold.stream import StreamOptions, run_stream
from kafka import consume_all, create_topic, produce, tansu_broker
from serving import redis_server, running
from streams import Process, check_decisions, demo_events, offline

_GROUP_OPTIONS = "session.timeout.ms=3000&heartbeat.interval.ms=300"


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with tansu_broker() as bootstrap:
        yield bootstrap


Records = list[tuple[int, int, bytes | None, bytes]]
_FEED_S = 12.0  # the second half of the log arrives over this long, while the kills go on


def _feed(bootstrap: str, topic: str, lines: list[tuple[bytes, bytes]], seconds: float) -> None:
    steps = 24
    for i in range(steps):
        produce(bootstrap, topic, lines[i * len(lines) // steps : (i + 1) * len(lines) // steps])
        time.sleep(seconds / steps)


def run_group_with_crashes(
    tmp: Path, model: Path, bootstrap: str, events: list[dict[str, Any]], extra: list[str], *, kills: int,
    isolation: str, bad: Sequence[bytes] = (),
) -> tuple[Records, Records]:  # fmt: skip
    name = tmp.name[-20:].replace("-", "_")
    tx, out, dlq = f"tx_{name}", f"out_{name}", f"dlq_{name}"
    for topic, parts in ((tx, 4), (out, 4), (dlq, 1)):
        create_topic(bootstrap, topic, parts)
    lines = [(e["user_id"].encode(), json.dumps(e).encode()) for e in events]
    for i, payload in enumerate(bad):  # spread over the log
        lines.insert((i + 1) * len(lines) // (len(bad) + 1), (b"u_bad", payload))
    # the log grows while the processes run (a live stream), so that every kill lands mid-stream
    half = len(lines) // 2
    produce(bootstrap, tx, lines[:half])
    feeding = threading.Thread(target=_feed, args=(bootstrap, tx, lines[half:], _FEED_S), daemon=True)
    store = f"sqlite:///{tmp / 'state.db'}"
    base = [sys.executable, "-m", "fourfold.cli.main", "stream", str(model),
            "--source", f"kafka://{bootstrap}/{tx}?{_GROUP_OPTIONS}", "--sink", f"kafka://{bootstrap}/{out}",
            "--dlq", f"kafka://{bootstrap}/{dlq}", "--group", f"g_{name}", "--store", store,
            "--batch-size", "500", *extra]  # fmt: skip
    procs = [Process([*base, "--instance", f"p{i}"], tmp / f"p{i}.log") for i in range(2)]
    rng = np.random.default_rng(5)
    try:
        for p in procs:
            p.start()
        feeding.start()
        for _ in range(kills):
            time.sleep(float(rng.uniform(1.0, 4.0)))
            victim = procs[int(rng.integers(2))]
            victim.kill()
            time.sleep(float(rng.uniform(0.0, 1.0)))
            victim.start()
        feeding.join()
        records = consume_all(bootstrap, out, expect=len(events), timeout_s=240, isolation=isolation,  # type: ignore[arg-type]
                              distinct=True)  # fmt: skip
        dead = consume_all(bootstrap, dlq, expect=len(bad), timeout_s=30, isolation=isolation,  # type: ignore[arg-type]
                           distinct=True)  # fmt: skip
    finally:
        codes = [p.stop() for p in procs]
    logs = "".join(p.log.read_text() for p in procs)
    assert codes == [0, 0], logs[-5000:]
    restored = [
        line for line in logs.splitlines() if "from offset" in line and "from offset None" not in line
    ]
    assert restored, "no partition was ever restored from a checkpoint: the crashes missed"
    return records, dead


@pytest.mark.slow
def test_two_processes_killed_and_restarted_lose_nothing_at_least_once(
    tmp_path: Path, fraud_model: Path, broker: str
) -> None:
    events = demo_events(100_000, seed=21)
    records, _ = run_group_with_crashes(tmp_path, fraud_model, broker, events, [], kills=5,
                                        isolation="read_uncommitted")  # fmt: skip
    check_decisions(records, events, fraud_model)


@pytest.mark.slow
def test_exactly_once_output_has_no_duplicates_after_crashes(
    tmp_path: Path, fraud_model: Path, broker: str
) -> None:
    events = demo_events(40_000, seed=22)
    bad = [
        b"{not json",
        b'{"user_id": "u_bad", "amount": 1.0}',
        b'{"user_id": "u_bad", "event_time": "x"}',
    ] * 10
    records, dead = run_group_with_crashes(tmp_path, fraud_model, broker, events, ["--exactly-once"], kills=5,
                                           isolation="read_committed", bad=bad)  # fmt: skip
    ids = [json.loads(v)["event_id"] for *_, v in records]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates in read_committed output"
    check_decisions(records, events, fraud_model)
    letters = [json.loads(v) for *_, v in dead]
    assert sorted(d["payload"].encode() for d in letters) == sorted(bad)  # each once, the payload as sent
    assert {d["code"] for d in letters} == {"malformed", "invalid"}
    assert all(d["reason"] for d in letters)


def test_predict_answers_with_the_streams_latest_event_within_a_second(
    tmp_path: Path, fraud_model: Path, broker: str
) -> None:
    """Streaming + Online: the stream writes each batch's windows to Redis, where /predict reads them."""
    create_topic(broker, "live_tx", 1)
    create_topic(broker, "live_out", 1)
    history = demo_events(300, seed=31)
    start = history[-1]["event_time"]
    user = "u_live"
    mine = [{**history[i], "event_id": 10_000 + i, "user_id": user, "event_time": start + 45_000 * i}
            for i in range(6)]  # fmt: skip
    probe_at = mine[-1]["event_time"] + 1
    body = {"user_id": user, "amount": 42.0, "merchant_category": 3, "device": 1}
    probe = {**body, "event_id": -1, "merchant_id": "m1", "event_time": probe_at}
    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        settings = ServeSettings(model=str(fraud_model), store=url, reload_interval_s=0, access_log=False,
                                 cache_size=0)  # fmt: skip
        stop = threading.Event()
        options = StreamOptions(str(fraud_model), source=f"kafka://{broker}/live_tx?{_GROUP_OPTIONS}",
                                sink=f"kafka://{broker}/live_out", group="live", store=url)  # fmt: skip
        worker = threading.Thread(target=run_stream, args=(options,), kwargs={"stop": stop}, daemon=True)
        worker.start()
        try:
            with running(settings, clock=lambda: probe_at) as base, httpx.Client(base_url=base) as http:
                assert http.post("/predict", json=body).json()["entity_found"] is False
                for k in range(1, len(mine) + 1):
                    _, want = offline([*mine[:k], probe], fraud_model)[-1]
                    produce(broker, "live_tx", [(user.encode(), json.dumps(mine[k - 1]).encode())])
                    sent = time.monotonic()
                    while True:
                        got = http.post("/predict", json=body).json()
                        if got["entity_found"] and got["score"] == pytest.approx(want, abs=1e-6):
                            break
                        assert time.monotonic() - sent < 30, (k, got, want)
                        time.sleep(0.01)
                    waited = time.monotonic() - sent
                    if k > 1:  # the first waits for the group to hand the stream its partition
                        assert waited < 1.0, f"/predict saw event {k} only after {waited:.2f} s"
        finally:
            stop.set()
            worker.join(timeout=30)
