"""The stream on Redis Streams, sharded: two processes share four shards through leases, one is killed
and restarted; every event is decided, any duplicate identical to its first copy, with the offline
engine's features and the predictor's scores."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import redis

from fourfold.stream.logs.base import OutRecord
from fourfold.stream.logs.redis_streams import RedisStreamSink
from serving import redis_server
from streams import Process, check_decisions, demo_events


def test_two_processes_on_four_shards_survive_kill_9(tmp_path: Path, fraud_model: Path) -> None:
    events = demo_events(20_000, seed=41)
    with redis_server() as port:
        url = f"redis-stream://127.0.0.1:{port}/0"
        producer = RedisStreamSink(f"{url}/tx?shards=4")
        producer.send([OutRecord(e["user_id"].encode(), json.dumps(e).encode()) for e in events])
        producer.flush()
        producer.close()
        args = [sys.executable, "-m", "fourfold.cli.main", "stream", str(fraud_model),
                "--source", f"{url}/tx?shards=4&lease_ms=2000&block_ms=50", "--sink", f"{url}/out",
                "--group", "fraud", "--store", f"redis://127.0.0.1:{port}/0",
                "--batch-size", "400"]  # fmt: skip
        procs = [Process([*args, "--instance", f"r{i}"], tmp_path / f"r{i}.log") for i in range(2)]
        client = redis.Redis(port=port)
        rng = np.random.default_rng(9)
        try:
            for p in procs:
                p.start()
            for _ in range(3):
                time.sleep(float(rng.uniform(1.0, 3.0)))
                victim = procs[int(rng.integers(2))]
                victim.kill()
                victim.start()
            deadline = time.monotonic() + 180
            while True:
                got = {json.loads(f[b"value"])["event_id"] for _, f in client.xrange("out")}
                if len(got) >= len(events):
                    break
                assert time.monotonic() < deadline, f"{len(got)} of {len(events)} decided"
                time.sleep(0.5)
        finally:
            codes = [p.stop() for p in procs]
        assert codes == [0, 0], [p.log.read_text()[-3000:] for p in procs]
        records = [(0, 0, f[b"key"], f[b"value"]) for _, f in client.xrange("out")]
        client.close()
    check_decisions(records, events, fraud_model)
