"""``fourfold stream --workers N``: N group members from one command, sharing the shards; SIGTERM stops
them all cleanly; a worker that dies stops the others and the command exits with its code."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from fourfold.errors import InvalidOptionError
from fourfold.stream import StreamOptions
from fourfold.stream.logs.base import OutRecord
from fourfold.stream.logs.redis_streams import RedisStreamSink
from fourfold.stream.workers import worker_options
from serving import redis_server
from streams import Process, check_decisions, demo_events


def _two_free_ports() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return int(port)
    raise AssertionError("no two consecutive free ports")


def _workers(parent: int) -> list[int]:
    """The pids of ``parent``'s worker processes (multiprocessing's spawned children)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            out.append(int(stat.parent.name))
    return sorted(out)


def _shards(metrics_port: int) -> list[int | None]:
    """Each worker's ``fourfold_stream_partitions`` (None while it does not answer yet)."""
    out: list[int | None] = []
    for port in (metrics_port, metrics_port + 1):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            out.append(None)
            continue
        [line] = [x for x in text.splitlines() if x.startswith("fourfold_stream_partitions ")]
        out.append(int(float(line.split()[1])))
    return out


def _decided(client: redis.Redis, n: int, proc: Process, timeout_s: float = 180) -> set[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = {json.loads(f[b"value"])["event_id"] for _, f in client.xrange("out")}
        if len(got) >= n:
            return got
        assert proc.proc is not None
        assert proc.proc.poll() is None, proc.log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{len(got)} of {n} decided"
        time.sleep(0.3)


def test_two_workers_share_the_shards_and_stop_together(tmp_path: Path, fraud_model: Path) -> None:
    events = demo_events(6_000, seed=51)
    with redis_server() as port:
        url = f"redis-stream://127.0.0.1:{port}/0"
        metrics = _two_free_ports()
        proc = Process([sys.executable, "-m", "fourfold.cli.main", "stream", str(fraud_model),
                        "--source", f"{url}/tx?shards=4&lease_ms=2000&block_ms=50", "--sink", f"{url}/out",
                        "--group", "fraud", "--store", f"redis://127.0.0.1:{port}/0", "--instance", "box",
                        "--workers", "2", "--metrics-port", str(metrics)],
                       tmp_path / "workers.log")  # fmt: skip
        client = redis.Redis(port=port)
        try:
            proc.start()
            # both workers up and holding their share (2 of 4 shards each), then the events arrive
            deadline = time.monotonic() + 90
            while _shards(metrics) != [2, 2]:
                assert proc.proc is not None
                assert proc.proc.poll() is None, proc.log.read_text()[-3000:]
                assert time.monotonic() < deadline, (_shards(metrics), proc.log.read_text()[-3000:])
                time.sleep(0.2)
            producer = RedisStreamSink(f"{url}/tx?shards=4")
            producer.send([OutRecord(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
            producer.flush()
            producer.close()
            _decided(client, len(events), proc)
            for p in (metrics, metrics + 1):  # each worker's own /healthz
                with urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz", timeout=5) as r:
                    assert r.status == 200
        finally:
            code = proc.stop()
        log = proc.log.read_text()
        assert code == 0, log[-3000:]
        records = [(0, 0, f[b"key"], f[b"value"]) for _, f in client.xrange("out")]
        client.close()
    check_decisions(records, events, fraud_model)
    lines = [line for line in log.splitlines() if line.startswith("worker box-w")]
    assert sorted(line.split(":")[0] for line in lines) == ["worker box-w0", "worker box-w1"]
    counts = [int(line.split("decided ")[1].split()[0]) for line in lines]
    assert all(c > 0 for c in counts), lines  # both had shards
    assert sum(counts) == len(events)  # no crash: each event decided once


def test_a_worker_that_dies_stops_the_others_and_the_command_exits_with_its_code(
    tmp_path: Path, fraud_model: Path
) -> None:
    with redis_server() as port:
        url = f"redis-stream://127.0.0.1:{port}/0"
        proc = Process([sys.executable, "-m", "fourfold.cli.main", "stream", str(fraud_model),
                        "--source", f"{url}/tx?shards=2&block_ms=50", "--sink", f"{url}/out",
                        "--group", "fraud", "--store", f"redis://127.0.0.1:{port}/0", "--instance", "box",
                        "--workers", "2"], tmp_path / "workers.log")  # fmt: skip
        proc.start()
        assert proc.proc is not None
        deadline = time.monotonic() + 60
        while len(workers := _workers(proc.proc.pid)) < 2:
            assert time.monotonic() < deadline, proc.log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(2)  # both streaming
        os.kill(workers[0], signal.SIGKILL)
        assert proc.proc.wait(timeout=90) == 128 + signal.SIGKILL
        assert _workers(proc.proc.pid) == []
        assert "stopped the others" in proc.log.read_text()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"workers": 0}, "--workers must be 1..64"),
        ({"workers": 65}, "--workers must be 1..64"),
        ({"workers": 2, "source": "in.jsonl"}, "partitioned --source"),
        ({"workers": 3, "metrics_port": 65534}, "past 65535"),
        ({"workers": 2, "engine": "flink", "sink": "out.jsonl", "source": "in.jsonl"}, "--workers"),
    ],
)
def test_worker_options_are_checked(kw: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"model": "m", "source": "kafka://127.0.0.1:1/tx", "sink": "kafka://127.0.0.1:1/o"}
    with pytest.raises(InvalidOptionError, match=message):
        StreamOptions(**(base | kw))


def test_each_worker_has_its_own_name_and_metrics_port() -> None:
    o = StreamOptions("m", "kafka://127.0.0.1:1/tx", "kafka://127.0.0.1:1/o", workers=3, instance="a",
                      metrics_port=9100)  # fmt: skip
    assert [(w.instance, w.metrics_port, w.workers) for w in worker_options(o, 3)] == [
        ("a-w0", 9100, 1), ("a-w1", 9101, 1), ("a-w2", 9102, 1)
    ]  # fmt: skip
    unnamed = worker_options(StreamOptions("m", "kafka://127.0.0.1:1/tx", "kafka://127.0.0.1:1/o"), 2)
    assert len({w.instance for w in unnamed}) == 2
    assert all(w.metrics_port is None for w in unnamed)
