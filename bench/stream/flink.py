"""The Flink runner against the local stream processor on the same JSONL log (run in the Flink
environment: ``./dev test-flink`` makes it):

    .venv-flink/bin/python bench/stream/flink.py --events 20000

Each leg scores the demo fraud model (the stream tests' package: XGBoost, the demo's seven windows) over
the same events, JSONL in and JSONL out; the time is wall time of the whole run (Flink's includes
starting the mini-cluster, so a second figure subtracts a 1-event run of the same configuration).
One table is printed.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))

BUNDLE_1000 = (("python.fn-execution.bundle.size", "1000"), ("python.fn-execution.bundle.time", "1000"))
LEGS = {  # name -> (engine, Flink settings over fourfold's, environment)
    "local": ("local", (), {}),
    "flink-process": ("flink", (), {}),  # fourfold's settings
    "flink-process-bundle-1000": ("flink", BUNDLE_1000, {}),  # Flink's default bundle
    "flink-thread": ("flink", (("python.execution-mode", "thread"),), {}),
    "flink-loopback": ("flink", (), {"_python_worker_execution_mode": "loopback"}),  # PyFlink's local default
}


def model(root: Path) -> Path:
    from streams import fraud_package  # the stream tests' package (tests/ is on sys.path)

    return fraud_package(root)


def run(leg: str, pkg: Path, events: Path, work: Path, parallelism: int) -> float:
    """Wall seconds of one run (NaN when it does not finish in 5 minutes: thread mode hangs here)."""
    engine, conf, env = LEGS[leg]
    out = work / "out.jsonl"
    shutil.rmtree(out, ignore_errors=True)
    out.unlink(missing_ok=True)
    args = [sys.executable, "-m", "fourfold.cli.main", "stream", str(pkg), "--source", str(events),
            "--sink", str(out), "--store", f"sqlite:///{work / f'state-{time.time_ns()}.db'}"]  # fmt: skip
    if engine == "flink":
        args += ["--engine", "flink", "--parallelism", str(parallelism)]
        args += [f"--flink-conf={k}={v}" for k, v in conf]
    started = time.perf_counter()
    try:
        subprocess.run(args, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)  # fmt: skip
    except subprocess.TimeoutExpired:
        return math.nan
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--parallelism", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument(
        "--legs",
        default=",".join(x for x in LEGS if x != "flink-thread"),
        help=f"comma-separated, of: {', '.join(LEGS)} (flink-thread did not finish here)",
    )
    a = parser.parse_args()
    from streams import demo_events, write_jsonl

    with tempfile.TemporaryDirectory(prefix="fourfold-bench-flink-") as tmp:
        work = Path(tmp)
        pkg = model(work)
        events = write_jsonl(work / "events.jsonl", demo_events(a.events))
        one = write_jsonl(work / "one.jsonl", demo_events(1))
        print(f"{a.events} events, parallelism {a.parallelism}, {os.cpu_count()} cores")
        print("| leg | wall s | events/s | startup s (1 event) | events/s less startup |")
        print("|---|---|---|---|---|")
        for leg in a.legs.split(","):
            wall = run(leg, pkg, events, work, a.parallelism)
            start = run(leg, pkg, one, work, a.parallelism) if wall == wall else math.nan
            net = wall - start
            print(f"| {leg} | {wall:.1f} | {a.events / wall:,.0f} | {start:.1f} | "
                  f"{a.events / net if net > 0 else float('nan'):,.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
