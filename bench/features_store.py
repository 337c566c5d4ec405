"""Read latency of the online feature stores: memory, SQLite (a file) and Redis (sync and async) on the
same data, next to a raw redis-py ``HMGET`` as the floor.

    .venv/bin/python bench/features_store.py [--entities 10000] [--features 10] [--reads 5000]

Starts its own ``redis-server`` on a free loopback port (no persistence), writes ``--entities`` entities
with ``--features`` float features each, then times reads of one random entity (all its features, named)
and of 100 random entities in one call. Prints a table in microseconds. Issue floor: Redis p99 < 1 ms for
one entity with 10 features on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import redis_server, timed

from fourfold.features.stores import InValue, open_async_store, open_store

NAMESPACE = "bench"


async def atimed(fn: Callable[[], Awaitable[Any]], repeat: int) -> np.ndarray:
    for _ in range(min(200, repeat)):
        await fn()
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter_ns()
        await fn()
        out[i] = time.perf_counter_ns() - t0
    return out / 1000.0


def row(label: str, one: np.ndarray, batch: np.ndarray, write_s: float | None, n: int) -> str:
    p50, p99 = np.percentile(one, [50, 99])
    b50, b99 = np.percentile(batch, [50, 99])
    rate = f"{n / write_s:>12,.0f}" if write_s else f"{'-':>12}"
    return f"{label:<22} {p50:>9.1f} {p99:>9.1f} {b50:>10.1f} {b99:>10.1f} {rate}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--reads", type=int, default=5_000)
    args = ap.parse_args()
    rnd = random.Random(0)
    ids = [f"u{i:06d}" for i in range(args.entities)]
    fields = [f"f{j}" for j in range(args.features)]
    rows: dict[str, dict[str, InValue]] = {e: {f: rnd.random() for f in fields} for e in ids}
    singles = [[rnd.choice(ids)] for _ in range(args.reads)]
    batches = [rnd.sample(ids, 100) for _ in range(max(100, args.reads // 10))]
    workdir = Path(tempfile.mkdtemp(prefix="ff-bench-store-"))

    def sync_case(label: str, url: str) -> str:
        store = open_store(url)
        try:
            t0 = time.perf_counter()
            for i in range(0, len(ids), 1000):
                store.write(NAMESPACE, {e: rows[e] for e in ids[i : i + 1000]}, event_time_ms=1)
            write_s = time.perf_counter() - t0
            it1, itb = iter(singles * 2), iter(batches * 4)
            one = timed(lambda: store.read(NAMESPACE, next(it1), fields), args.reads, warmup=200)
            batch = timed(lambda: store.read(NAMESPACE, next(itb), fields), len(batches), warmup=200)
            assert all(r is not None for r in store.read(NAMESPACE, batches[0], fields))
            return row(label, one, batch, write_s, len(ids))
        finally:
            store.close()

    async def async_case(label: str, url: str) -> str:
        store = open_async_store(url)
        try:
            it1, itb = iter(singles * 2), iter(batches * 4)
            one = await atimed(lambda: store.read(NAMESPACE, next(it1), fields), args.reads)
            batch = await atimed(lambda: store.read(NAMESPACE, next(itb), fields), len(batches))
            return row(label, one, batch, None, len(ids))
        finally:
            await store.close()

    def raw_case(port: int) -> str:
        import redis

        client = redis.Redis(port=port)
        it1, itb = iter(singles * 2), iter(batches * 4)
        one = timed(lambda: client.hmget(f"ff:{NAMESPACE}:{next(it1)[0]}", fields), args.reads)

        def many() -> Any:
            with client.pipeline(transaction=False) as pipe:
                for e in next(itb):
                    pipe.hmget(f"ff:{NAMESPACE}:{e}", fields)
                return pipe.execute()

        batch = timed(many, len(batches))
        client.close()
        return row("raw redis-py HMGET", one, batch, None, len(ids))

    print(f"\n{args.entities:,} entities x {args.features} float features; {os.cpu_count()} cores; µs")
    head = ("1 ent p50", "1 ent p99", "100 ent p50", "100 ent p99", "writes/s")
    print(f"{'store':<22} {head[0]:>9} {head[1]:>9} {head[2]:>10} {head[3]:>10} {head[4]:>12}")
    print(sync_case("memory", "memory://"))
    print(sync_case("sqlite (file, WAL)", f"sqlite:///{workdir / 'online.db'}"))
    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        print(sync_case("redis (sync)", url))
        print(asyncio.run(async_case("redis (async)", url)))
        print(raw_case(port))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
