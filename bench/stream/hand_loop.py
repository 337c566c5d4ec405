"""The hand-written loop: confluent-kafka batch consume -> JSON decode -> per-user deques for the two
10-minute windows -> one vectorized predict per consumed batch -> produce -> commit. No state safety (the
windows live in this process only), no dead letters, at-least-once only by the order of produce and
commit. Started by run.py with the same command line as ``fourfold stream``; SIGTERM ends it after the
batch in hand.

    .venv/bin/python bench/stream/hand_loop.py PKG --source kafka://H:P/IN --sink kafka://H:P/OUT --group G
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict, deque
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer
from job import WINDOW_MS, decision, kafka_url, parse_args

from fourfold import load_predictor

BATCH = 2_000


def main() -> None:
    args = parse_args()
    bootstrap, source = kafka_url(args.source)
    _, sink = kafka_url(args.sink)
    predictor = load_predictor(args.package)
    version = predictor.version
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 300,
            "fetch.wait.max.ms": 10,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "queue.buffering.max.messages": 1_000_000})
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    history: dict[Any, deque[tuple[int, float]]] = defaultdict(deque)  # user -> (ts, amount), oldest first
    sums: dict[Any, float] = defaultdict(float)
    consumer.subscribe([source])
    while not stopping:
        messages = consumer.consume(num_messages=BATCH, timeout=0.01)
        events = [orjson.loads(m.value()) for m in messages if m.error() is None]
        if not events:
            continue
        n = len(events)
        amount, count, total = np.empty(n), np.empty(n), np.empty(n)
        for i, e in enumerate(events):
            t, a, user = e["event_time"], e["amount"], e["user_id"]
            h = history[user]
            s = sums[user]
            while h and h[0][0] < t - WINDOW_MS:
                s -= h.popleft()[1]
            if not h:
                s = 0.0  # an empty window: drop the running sum's rounding drift
            c, w = len(h), s
            for ts, am in reversed(h):  # point in time: an earlier event at the same ms is not seen
                if ts < t:
                    break
                c, w = c - 1, w - am
            amount[i], count[i], total[i] = a, c, w
            h.append((t, a))
            sums[user] = s + a
        scores = predictor.predict({"amount": amount, "txn_count_10m": count, "amount_sum_10m": total})[
            "score"
        ]
        now = int(time.time() * 1000)
        for e, score in zip(events, scores.tolist(), strict=True):
            producer.produce(
                sink, orjson.dumps(decision(e, score, version, now)), str(e["event_id"]).encode()
            )
        producer.poll(0)
        consumer.commit(asynchronous=True)
    producer.flush(30)
    consumer.close()


if __name__ == "__main__":
    main()
