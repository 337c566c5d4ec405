"""``fourfold stream --workers N``: N members of one consumer group on this machine, one process each.

The processor is single-threaded Python: one process uses one core. Scale-out is more members of the
group (Kafka: partitions are shared out; Redis Streams: shards, one owner each), so N workers are N
ordinary ``fourfold stream`` processes - each with its own instance name (``<instance>-w<i>``, its Kafka
transactional id) and, with ``--metrics-port P``, its own ``/healthz`` and ``/metrics`` on ``P + i`` -
started from one command. They share nothing but the log and the store, exactly as processes on
different machines do: a worker that dies is a member that left, and its partitions move.

SIGTERM / Ctrl-C reaches every worker: each finishes its batch, checkpoints it and exits. A worker that
exits on its own (an error) stops the others, and the command exits with its code (a supervisor such as
Kubernetes then restarts the whole set). A JSONL file has one reader: ``--workers`` needs a partitioned
log (``StreamOptions`` refuses it otherwise).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from dataclasses import replace
from typing import Any

from fourfold.errors import FourfoldError
from fourfold.stream.options import StreamOptions

__all__ = ["run_workers", "worker_options"]

log = logging.getLogger("fourfold.stream")
_STOP_S = 60.0  # a worker's SIGTERM: its batch, checkpoint and delivery; then it is killed


def worker_options(options: StreamOptions, n: int) -> list[StreamOptions]:
    """Each worker's options: the same job, its own instance name and metrics port."""
    base = options.instance or f"{socket.gethostname()}-{os.getpid()}"
    port = options.metrics_port
    return [
        replace(
            options,
            workers=1,
            instance=f"{base}-w{i}",
            metrics_port=None if port is None else (port + i if port else 0),
        )
        for i in range(n)
    ]


def _member(options: StreamOptions) -> None:
    """One worker's process: ``run_stream`` until SIGTERM, its summary on stderr."""
    from fourfold.stream.job import run_stream

    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = run_stream(options, stop=stop)
    except FourfoldError as exc:
        print(f"error: worker {options.instance}: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(1)
    dead = ", ".join(f"{k} {v}" for k, v in sorted(summary.dead_letters.items())) or "none"
    print(f"worker {options.instance}: decided {summary.decided} events; dead letters: {dead}",
          file=sys.stderr, flush=True)  # fmt: skip


def run_workers(options: StreamOptions, stop: threading.Event) -> int:
    """Run ``options.workers`` workers until ``stop`` is set or one of them exits; the exit code."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no inherited threads or sockets
    procs = [
        ctx.Process(target=_member, args=(o,), name=f"fourfold-stream-{o.instance}", daemon=False)
        for o in worker_options(options, options.workers)
    ]
    for p in procs:
        p.start()
    log.info("%d workers started: %s", len(procs), ", ".join(str(p.pid) for p in procs))
    while not stop.is_set() and all(p.is_alive() for p in procs):
        stop.wait(0.2)
    first = next((p for p in procs if not p.is_alive()), None)
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: the worker's own handler finishes its batch
    for p in procs:
        p.join(_STOP_S)
        if p.is_alive():
            log.warning("worker %s did not stop within %.0f s: killed", p.pid, _STOP_S)
            p.kill()
            p.join()
    if stop.is_set():  # told to stop: the worst worker's exit (0 when each stopped as asked; one that
        # was still starting ends on the SIGTERM itself, with nothing in flight)
        codes = [_code(p.exitcode) for p in procs if p.exitcode and p.exitcode != -signal.SIGTERM]
        return max(codes, default=0)
    assert first is not None
    log.error("worker %s exited with %s: stopped the others", first.pid, first.exitcode)
    return _code(first.exitcode)


def _code(exitcode: int | None) -> int:
    """A worker's exit as the command's: killed by a signal is 128 + the signal, as a shell reports it;
    one that ended before it was told to, and said nothing, is 1."""
    if exitcode is None or exitcode == 0:
        return 1
    return 128 - exitcode if exitcode < 0 else exitcode
