"""The Flink job's configuration, set on purpose (no PyFlink needed: a dict of Flink option keys).

* ``python.execution-mode`` = ``process`` and ``python.fn-execution.bundle.size`` = 100,000 /
  ``bundle.time`` = 100 ms: measured on this job (docs/stream.md) - Flink's default bundle of 1,000
  elements pays a Java <-> Python round trip per bundle that dominates; a bundle is cut at the size,
  the time, or a checkpoint barrier, so the time bounds an event's added latency.
* ``python.state.cache-size``: the Python worker's cache of keyed state, as large as the keys a worker
  holds (a miss is a round trip to the Java state backend).
* ``python.executable``: this environment's Python (the one with PyFlink and fourfold), so the workers
  are the client's.
* checkpoints every ``commit_interval_ms`` (default 1 s), exactly-once barriers; keyed state in the
  ``hashmap`` backend (the heap) unless ``rocksdb`` is asked for.

    >>> conf = flink_configuration(StreamOptions("m", "in.jsonl", "out.jsonl", engine="flink"), "/v/python")
    >>> conf["python.execution-mode"], conf["state.backend.type"]
    ('process', 'hashmap')
"""

from __future__ import annotations

from pathlib import Path

from fourfold.stream.options import StreamOptions

__all__ = ["CHECKPOINT_MS", "flink_configuration", "jar_urls"]

CHECKPOINT_MS = 1_000  # Flink checkpoints are asynchronous snapshots: once a second by default


def jar_urls(jars: tuple[str, ...]) -> list[str]:
    """``--flink-jars`` as the ``file://`` URLs ``pipeline.jars`` takes."""
    return [j if "://" in j else Path(j).resolve().as_uri() for j in jars]


def flink_configuration(o: StreamOptions, python: str) -> dict[str, str]:
    """The Flink configuration of ``o``'s job (``python``: the workers' interpreter); ``--flink-conf``
    pairs are applied last, over these."""
    interval = CHECKPOINT_MS if o.commit_interval_ms is None else max(o.commit_interval_ms, 10)
    conf = {
        "parallelism.default": str(o.flink_parallelism),
        "python.executable": python,
        "python.client.executable": python,
        "python.execution-mode": "process",
        "python.fn-execution.bundle.size": "100000",
        "python.fn-execution.bundle.time": "100",
        "python.state.cache-size": str(max(1000, o.max_keys)),
        "python.metric.enabled": "false",
        "execution.checkpointing.interval": f"{interval} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "state.backend.type": o.state_backend,
        "rest.bind-address": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "taskmanager.host": "127.0.0.1",
        "jobmanager.rpc.address": "127.0.0.1",
    }
    if o.flink_jars:
        conf["pipeline.jars"] = ";".join(jar_urls(o.flink_jars))
    conf.update(dict(o.flink_conf))
    return conf
