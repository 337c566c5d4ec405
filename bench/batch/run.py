"""Batch scoring: fourfold's local engine against the raw ceiling (the fastest verified runtime's
vectorized predict over the table already in memory, no I/O) and a hand-written pyarrow loop, on the demo
model and N rows of the demo's features split into files.

    .venv/bin/python bench/batch/run.py [--rows 2000000] [--files 16] [--workers 2]

(The Spark comparisons of the batch issue are not in this first version.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def watch_children(peak: dict[int, int], stop: list[bool]) -> None:
    """Peak RSS (KiB) of this process's children, polled from /proc (ru_maxrss mixes in other children)."""
    me = os.getpid()
    while not stop[0]:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if f"PPid:\t{me}\n" in status:
                rss = next(
                    (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0
                )
                peak[int(entry)] = max(peak.get(int(entry), 0), rss)
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ff-batch-bench-"))
    os.environ["FOURFOLD_HOME"] = str(home)

    from fourfold import Predictor, load_package, resolve
    from fourfold.batch import BatchJob, run_batch
    from fourfold.demo.data import generate_transactions
    from fourfold.demo.features import FEATURES, featurize
    from fourfold.demo.run import run_demo

    run_demo(events=200_000, out_dir=home / "demo")
    pkg = resolve("models:/fraud/production")
    table = featurize(generate_transactions(args.rows, seed=1)).select(["event_id", *FEATURES])
    table = table.set_column(0, "event_id", table["event_id"].cast(pa.string()))
    src = home / "input"
    src.mkdir()
    step = -(-table.num_rows // args.files)
    for i in range(args.files):
        pq.write_table(table.slice(i * step, step), src / f"part-{i:03d}.parquet")

    runtime = BatchJob._fastest_runtime(load_package(pkg.path).with_version(pkg.version))
    p = Predictor(pkg, runtime=runtime)  # type: ignore[arg-type]
    x = p.matrix(table)
    t0 = time.perf_counter()
    p.predict_matrix(x)
    raw = table.num_rows / (time.perf_counter() - t0)

    t0 = time.perf_counter()  # a plain pyarrow read -> predict -> write loop, one process
    out = home / "loop"
    out.mkdir()
    for f in sorted(src.glob("*.parquet")):
        t = pq.read_table(f)
        scores = p.predict(t)["score"]
        pq.write_table(pa.table({"event_id": t["event_id"], "score": scores}), out / f.name)
    loop = table.num_rows / (time.perf_counter() - t0)

    peak: dict[int, int] = {}
    stop = [False]
    watcher = threading.Thread(target=watch_children, args=(peak, stop), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    summary = run_batch(model="models:/fraud/production", input=str(src), output=str(home / "out"),
                        id_cols=("event_id",), workers=args.workers)  # fmt: skip
    engine = table.num_rows / (time.perf_counter() - t0)
    stop[0] = True
    worker_peak = max(peak.values(), default=0) / 1024

    print(
        f"\nbatch bench: {args.rows:,} rows x {len(FEATURES)} features, {args.files} files, {os.cpu_count()} cores"  # noqa: E501
    )
    print(f"{'raw ceiling (' + runtime + ', in memory, no I/O)':<44} {raw:>12,.0f} rows/s")
    print(f"{'pyarrow read -> predict -> write loop':<44} {loop:>12,.0f} rows/s")
    print(f"{f'fourfold local engine ({args.workers} workers)':<44} {engine:>12,.0f} rows/s  "
          f"({engine / raw:.0%} of the ceiling)")  # fmt: skip
    print(f"peak RSS of a worker: {worker_peak:,.0f} MiB; {summary.render()}")
    _ = np


if __name__ == "__main__":
    main()
