"""Feature engines and online reads on the demo's feature set, with DuckDB window SQL as the peer.

    .venv/bin/python bench/features.py [--events 5000000] [--incremental-events 300000] [--incremental-only]

Prints: the offline engine's events/s on the whole log against the same features as DuckDB window
aggregates (RANGE frames; in-order semantics only - DuckDB has no notion of lateness), the incremental
engine's events/s single-threaded on the log's first events - with its users, and with the same events'
users redrawn from a zipf(1.3) law, where the hottest user has a quarter of the events and its 1d and 7d
windows hold tens of thousands - and "as of now" online reads through ``OnlineFeatures`` (state decode
plus window evaluation) on SQLite and Redis; then runs ``bench/features_store.py`` for the raw stores.
Issue floors: offline >= 1M events/s on 5M events; incremental >= 100k events/s, on zipf keys >= 50% of
that; Redis p99 < 1 ms.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import tempfile
import time
from bisect import bisect_left
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))


def duckdb_peer(log: pa.Table) -> float:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    t = log.select(["user_id", "event_time", "amount", "merchant_id"]).append_column(
        "ts", log["event_time"].cast(pa.int64())
    )
    con.register("log", t)

    def w(ms: int) -> str:
        return f"(PARTITION BY user_id ORDER BY ts RANGE BETWEEN {ms} PRECEDING AND 1 PRECEDING)"

    m, h, d = 600_000, 3_600_000, 86_400_000
    sql = f"""SELECT count(*) OVER {w(m)}, count(*) OVER {w(h)}, sum(amount) OVER {w(h)},
      avg(amount) OVER {w(7 * d)}, max(amount) OVER {w(d)}, count(DISTINCT merchant_id) OVER {w(d)},
      last(amount) OVER {w(h)} FROM log"""
    t0 = time.perf_counter()
    con.execute(sql).fetchnumpy()
    return time.perf_counter() - t0


def percentiles(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples) * 1e6, [50, 99])
    return float(p50), float(p99)


def report(events: int, features: int, rows: list[tuple[str, str]]) -> None:
    width = max(len(a) for a, _ in rows)
    print(f"\nfeatures bench: {events:,} demo events, {features} features; {os.cpu_count()} cores")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--incremental-events", type=int, default=300_000)
    ap.add_argument("--reads", type=int, default=3000)
    ap.add_argument("--incremental-only", action="store_true", help="only the incremental engine's figures")
    args = ap.parse_args()
    os.environ.setdefault("FOURFOLD_HOME", tempfile.mkdtemp(prefix="ff-bench-"))

    from common import redis_server

    from fourfold.demo.data import generate_transactions
    from fourfold.demo.features import FRAUD_FEATURES as FS
    from fourfold.features import IncrementalEngine
    from fourfold.features.offline import compute_features
    from fourfold.features.online import OnlineFeatures
    from fourfold.features.stores import open_store

    log = generate_transactions(args.events)
    rows: list[tuple[str, str]] = []
    if not args.incremental_only:
        t0 = time.perf_counter()
        compute_features(log, FS)
        off = time.perf_counter() - t0
        peer = duckdb_peer(log)
        rows.append(("offline engine (arrival order, lateness)", f"{args.events / off:,.0f} events/s"))
        rows.append(("DuckDB window SQL, same features (peer)", f"{args.events / peer:,.0f} events/s"))
        rows.append(("offline / DuckDB", f"{peer / off:.2f}x"))

    small = log.slice(0, args.incremental_events)
    events = small.select(["user_id", "event_time", "amount", "merchant_category", "device", "merchant_id"])
    pylist = events.to_pylist()
    ts = events["event_time"].cast(pa.int64()).to_numpy()
    for r, t in zip(pylist, ts, strict=True):
        r["event_time"] = int(t)
    engine = IncrementalEngine(FS)
    t0 = time.perf_counter()
    for r in pylist:
        engine.process(r)
    inc = time.perf_counter() - t0
    rows.append(("incremental engine, per event, 1 thread", f"{len(pylist) / inc:,.0f} events/s"))
    users = sorted(map(str, engine.keys()))

    # the same events, their users redrawn from zipf(1.3): one user has a quarter of them
    zipf = (np.random.default_rng(0).zipf(1.3, len(pylist)) - 1) % len(users)
    hot_rows = [dict(r, user_id=users[u]) for r, u in zip(pylist, zipf.tolist(), strict=True)]
    hot = IncrementalEngine(FS)
    t0 = time.perf_counter()
    for r in hot_rows:
        hot.process(r)
    inc_hot = time.perf_counter() - t0
    hottest = hot.state(users[0])
    assert hottest is not None
    day = hottest.ts[bisect_left(hottest.ts, hottest.max_ts - 86_400_000) :]
    rows.append(("incremental engine, zipf(1.3) users, 1 thread", f"{len(pylist) / inc_hot:,.0f} events/s"))
    rows.append(
        ("zipf / uniform", f"{inc / inc_hot:.0%} (the hottest user's 1d window: {len(day):,} events)")
    )
    if args.incremental_only:
        report(args.events, len(FS.features), rows)
        return

    now = int(ts.max()) + 60_000
    rng = np.random.default_rng(0)
    with redis_server() as port, tempfile.TemporaryDirectory() as tmp:
        for label, url in [
            ("sqlite", f"sqlite:///{tmp}/features.db"),
            ("redis", f"redis://127.0.0.1:{port}/0"),
        ]:
            store = open_store(url)
            online = OnlineFeatures(FS, store)
            online.materialize(small)
            lat = []
            for key in rng.choice(users, args.reads):
                t0 = time.perf_counter()
                online.get([str(key)], at_ms=now)
                lat.append(time.perf_counter() - t0)
            p50, p99 = percentiles(lat)
            rows.append(
                (f"online get, 1 entity, as of now ({label})", f"p50 {p50:,.0f} us, p99 {p99:,.0f} us")
            )
            store.close()

    report(args.events, len(FS.features), rows)
    sys.argv = [sys.argv[0]]
    runpy.run_path(str(Path(__file__).with_name("features_store.py")), run_name="__main__")


if __name__ == "__main__":
    main()
