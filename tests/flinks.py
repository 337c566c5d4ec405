"""Helpers for the Flink runner's tests: the local processor's output as the oracle, Flink's part files
read back, and the comparison of two engines' decisions and dead letters event by event."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fourfold.stream import StreamOptions, run_stream

#: a decision's fields that must be identical between engines (``scored_at`` is the time it was made)
SAME = ("event_id", "score", "action", "model_version", "event_time", "key", "features")
#: a dead letter's fields that must be identical (Flink's sources do not tell a position: -1)
SAME_DEAD = ("code", "reason", "source", "key", "payload")


def local_oracle(tmp: Path, model: Path, events: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``fourfold stream`` with the local engine on ``events``: its decisions and dead letters."""
    out, dead = tmp / "local-out.jsonl", tmp / "local-dead.jsonl"
    run_stream(StreamOptions(str(model), source=str(events), sink=str(out), dlq=str(dead),
                             store=f"sqlite:///{tmp / 'local-state.db'}"))  # fmt: skip
    return read_lines(out), read_lines(dead)


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_parts(directory: Path) -> list[dict[str, Any]]:
    """Every record of a Flink file sink's committed part files (in-progress ones are hidden files)."""
    out: list[dict[str, Any]] = []
    for part in sorted(directory.rglob("*.jsonl")):
        if not part.name.startswith("."):
            out += read_lines(part)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def assert_same_decisions(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """One decision per event, each equal to the oracle's field for field: the score bit for bit (the
    same runtime on the same float32 row: a tree ensemble's sum does not depend on the batch around it)."""
    by_id = {d["event_id"]: d for d in expected}
    assert len(by_id) == len(expected)
    ids = [d["event_id"] for d in got]
    assert len(ids) == len(set(ids)), "an event was decided twice"
    assert set(ids) == set(by_id)
    for d in got:
        e = by_id[d["event_id"]]
        bad = {f: (d.get(f), e.get(f)) for f in SAME if not _same(d.get(f), e.get(f))}
        assert not bad, (d["event_id"], bad)


def assert_same_dead_letters(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """The same dead letters (by payload): same code, reason, source and key."""

    def by_payload(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {r["payload"]: {f: r.get(f) for f in SAME_DEAD} for r in rows}

    assert len(got) == len(expected)
    assert by_payload(got) == by_payload(expected)
