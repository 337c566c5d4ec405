"""What every leg of the streaming bench shares: the job's constants, the command line each leg takes (the
``fourfold stream`` contract, so the bench starts every leg the same way), and the decision record."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

WINDOW_MS = 600_000  # the 10-minute windows
BLOCK_ABOVE = 0.85  # action = block when score > this
FEATURES = ["amount", "txn_count_10m", "amount_sum_10m"]
FEATURES_YAML = {
    "name": "fraud_stream",
    "entities": [{"name": "user", "join_key": "user_id"}],
    "sources": [{"name": "transactions", "entity": "user", "timestamp": "event_time"}],
    "features": [
        {"name": "amount", "request": "amount"},
        {"name": "txn_count_10m", "source": "transactions", "agg": "count", "window": "10m"},
        {
            "name": "amount_sum_10m",
            "source": "transactions",
            "agg": "sum",
            "column": "amount",
            "window": "10m",
        },
    ],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``PACKAGE_DIR --source kafka://HOST:PORT/TOPIC --sink ... --dlq ... --group G --store URL
    [--exactly-once]``; the bench's own legs ignore what they have no use for (DLQ, store)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("package")
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--dlq")
    parser.add_argument("--group", required=True)
    parser.add_argument("--store")
    parser.add_argument("--exactly-once", action="store_true")
    return parser.parse_args(argv)


def kafka_url(url: str) -> tuple[str, str]:
    """``kafka://127.0.0.1:9092/topic`` -> (bootstrap, topic)."""
    parts = urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc or not parts.path.strip("/"):
        raise SystemExit(f"not a kafka://HOST:PORT/TOPIC URL: {url!r}")
    return parts.netloc, parts.path.strip("/")


def decision(event: dict[str, Any], score: float, model_version: str | None, now_ms: int) -> dict[str, Any]:
    """The output record of one event."""
    return {
        "event_id": event["event_id"],
        "score": score,
        "action": "block" if score > BLOCK_ABOVE else "allow",
        "model_version": model_version,
        "event_time": event["event_time"],
        "scored_at": now_ms,
    }
