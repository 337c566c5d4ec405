"""The Quix Streams leg: the same job written the way Quix Streams' API leads to - the user's 10-minute
history kept in Quix's per-key ``State`` (RocksDB, backed by a changelog topic) in a stateful ``apply``,
the model called per event, the decision sent with ``to_topic`` (its message timestamp set to the
time of the decision: Quix would give it the event's). Runs in its own virtualenv
(``bench/stream/.venv-quix``: quixstreams pins an older confluent-kafka than the repo's), with the same
command line as ``fourfold stream``; SIGTERM stops it (Quix's own handler).

    bench/stream/.venv-quix/bin/python bench/stream/quix_leg.py PACKAGE --source kafka://H:P/IN ...
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from job import WINDOW_MS, decision, kafka_url, parse_args
from quixstreams import Application, State

from fourfold import load_predictor


def main() -> None:
    args = parse_args()
    bootstrap, source = kafka_url(args.source)
    _, sink = kafka_url(args.sink)
    predictor = load_predictor(args.package)
    version = predictor.version
    state_dir = Path((args.store or "sqlite:///quix-state").removeprefix("sqlite:///") + ".quix")
    app = Application(
        broker_address=bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        processing_guarantee="exactly-once" if args.exactly_once else "at-least-once",
        consumer_extra_config={
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 300,
            "fetch.wait.max.ms": 10,
        },
        loglevel="WARNING",
    )
    events = app.topic(source, value_deserializer="json")
    decisions = app.topic(sink, value_serializer="json", key_serializer="str")

    def features(event: dict[str, Any], state: State) -> dict[str, Any]:
        t = event["event_time"]
        history = [p for p in state.get("history", []) if p[0] >= t - WINDOW_MS]  # [[ts, amount], ...]
        seen = [p for p in history if p[0] < t]  # point in time: not the event, nor one at the same ms
        event["txn_count_10m"] = len(seen)
        event["amount_sum_10m"] = sum(p[1] for p in seen)
        history.append([t, event["amount"]])
        state.set("history", history)
        return event

    def score(event: dict[str, Any]) -> dict[str, Any]:
        row = {"amount": event["amount"], "txn_count_10m": event["txn_count_10m"]}
        row["amount_sum_10m"] = event["amount_sum_10m"]
        out = predictor.predict_one(row)
        return decision(event, float(out["score"]), version, int(time.time() * 1000))

    sdf = app.dataframe(events)
    sdf = sdf.apply(features, stateful=True).apply(score)
    # Quix gives an output message its input's timestamp; the bench times a decision by its own
    sdf = sdf.set_timestamp(lambda decision, _key, _ts, _headers: decision["scored_at"])
    sdf.to_topic(decisions, key=lambda d: str(d["event_id"]))
    app.run()


if __name__ == "__main__":
    main()
