"""The in-process stores read the time only from their ``clock``: write times, expiry and the sweep."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fourfold.features.stores import MemoryStore, OnlineStore, SQLiteStore

T0 = 1_700_000_000_000


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_write_times_and_expiry_follow_the_clock(kind: str, tmp_path: Path) -> None:
    now = [T0]
    store: OnlineStore = (
        MemoryStore(clock=lambda: now[0])
        if kind == "memory"
        else SQLiteStore(tmp_path / "online.db", clock=lambda: now[0])
    )
    try:
        store.write("ns", {"u1": {"a": 1.0}}, event_time_ms=5, ttl_s=1)
        [record] = store.read("ns", ["u1"])
        assert record is not None
        assert record.written_at_ms == T0
        now[0] = T0 + 999
        assert store.read("ns", ["u1"])[0] is not None
        now[0] = T0 + 1000  # the expiry instant itself is past
        assert store.read("ns", ["u1"]) == [None]
        assert store.delete("ns", ["u1"]) == 0
    finally:
        store.close()


def test_sqlite_sweep_runs_on_the_clock(tmp_path: Path) -> None:
    now = [T0]
    path = tmp_path / "online.db"
    with SQLiteStore(path, clock=lambda: now[0]) as store:
        store.write("ns", {"old": {"a": 1.0}}, event_time_ms=1, ttl_s=1)
        store.write("ns", {"kept": {"a": 1.0}}, event_time_ms=1)

        def rows() -> list[tuple[str, int]]:
            with sqlite3.connect(path) as conn:
                return sorted(conn.execute("SELECT entity, COUNT(*) FROM ff_values GROUP BY entity"))

        now[0] = T0 + 30_000
        store.write("other", {"u": {"a": 1.0}}, event_time_ms=1)
        assert rows() == [("kept", 1), ("old", 1), ("u", 1)]  # expired but not swept yet: once a minute
        now[0] = T0 + 60_001
        store.write("other", {"u": {"a": 2.0}}, event_time_ms=1)
        assert rows() == [("kept", 1), ("u", 1)]
