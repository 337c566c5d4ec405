"""run_stream: the one module that opens every part of a stream job (the CLI's and the Python API's
entry), runs the processor until it is told to stop or a bounded source ends, and closes everything.

    >>> # from fourfold.stream import StreamOptions, run_stream
    >>> # run_stream(StreamOptions("models:/fraud/production", source="events.jsonl",
    >>> #                          sink="decisions.jsonl", dlq="dead.jsonl"))
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fourfold.errors import UnavailableError
from fourfold.features.definitions import FeatureSet, load_features_file
from fourfold.features.stores import open_store
from fourfold.model.predictor import Predictor
from fourfold.registry.resolve import resolve
from fourfold.settings import Settings
from fourfold.stream.delivery import Delivery
from fourfold.stream.logs.base import OutRecord, Sink, Source, parse_kind
from fourfold.stream.metrics import HealthServer, StreamMetrics
from fourfold.stream.options import StreamOptions
from fourfold.stream.processor import StreamProcessor

__all__ = ["StreamSummary", "run_stream"]

log = logging.getLogger("fourfold.stream")


@dataclass(frozen=True)
class StreamSummary:
    decided: int
    dead_letters: dict[str, int]
    batches: int


def _source(o: StreamOptions, instance: str) -> Source:
    kind = parse_kind(o.source)
    if kind == "kafka":
        from fourfold.stream.logs.kafka import KafkaSource

        return KafkaSource(o.source, group=o.group, client_id=instance)
    if kind == "redis-stream":
        from fourfold.stream.logs.redis_streams import RedisStreamSource

        return RedisStreamSource(o.source, group=o.group, member=instance)
    from fourfold.stream.logs.jsonl import JsonlSource

    return JsonlSource(o.source, follow=o.follow)


def _sink(url: str, o: StreamOptions, instance: str, shared: dict[str, Any]) -> Sink:
    kind = parse_kind(url)
    if kind == "kafka":
        from fourfold.stream.logs.kafka import KafkaSink

        if "kafka" in shared:
            first: KafkaSink = shared["kafka"]
            return first.sharing(url)
        txn = f"fourfold-{o.group}-{instance}" if o.exactly_once else None
        sink = KafkaSink(url, transactional_id=txn)
        shared["kafka"] = sink
        return sink
    if kind == "redis-stream":
        from fourfold.stream.logs.redis_streams import RedisStreamSink

        return RedisStreamSink(url)
    from fourfold.stream.logs.jsonl import JsonlSink

    return JsonlSink(url)


class _Transactional(Delivery):
    """Exactly-once: each batch's records and its input offsets in one Kafka transaction, committed
    right after the store checkpoint that keeps the records as its outbox (a transaction left open
    across the next batch is what a kill -9 then catches: one per batch)."""

    outbox = True
    per_batch = True

    def __init__(self, sinks: Sequence[Sink | None], source: Source) -> None:
        from fourfold.stream.logs.kafka import KafkaSink, KafkaSource, KafkaTransaction

        super().__init__(sinks, source)
        assert isinstance(sinks[0], KafkaSink)
        assert isinstance(source, KafkaSource)
        self.txn = KafkaTransaction(sinks[0], source)
        self.open = False

    def send(self, records: Sequence[Sequence[OutRecord]]) -> None:
        if not self.open:
            self.txn.begin()
            self.open = True
        super().send(records)

    def before_checkpoint(self) -> None:
        """The records are flushed by the transaction's commit, after the checkpoint."""

    def after_checkpoint(self, offsets: Mapping[int, int]) -> None:
        if not self.open:  # nothing was sent: the offsets alone
            self.txn.begin()
            self.open = True
        try:
            self.txn.commit(offsets)
        except BaseException:
            self.abandon()
            raise
        self.open = False

    def abandon(self) -> None:
        # committing here would race the next owner's read of the group's offsets: abort, and let it
        # deliver the checkpoint's outbox in its own transaction
        if self.open:
            self.open = False
            try:
                self.txn.abort()
            except Exception as exc:  # already aborted by a failed commit, or the broker is gone
                log.debug("abort: %s", exc)


def _feature_set(o: StreamOptions, pkg: Any) -> FeatureSet | None:
    if o.features is None:
        fs: FeatureSet | None = pkg.features()
        return fs
    return load_features_file(o.features, needs=pkg.signature.feature_names, model=pkg.label,
                              label=f"--features {o.features}")  # fmt: skip


def run_stream(
    options: StreamOptions, *, stop: threading.Event | None = None, on_ready: Any = None
) -> StreamSummary:
    """Run ``options``' stream job until ``stop`` is set (SIGTERM in the CLI: the batch in flight is
    finished, checkpointed and delivered first) or a bounded source (a file, not followed) ends.
    ``engine="flink"`` runs it as a Flink job instead (:func:`fourfold.stream.flink.job.run_flink`)."""
    o = options
    if o.engine == "flink":  # the same per-key path as a PyFlink job (fourfold.stream.flink)
        from fourfold.stream.flink.job import run_flink

        return run_flink(o, stop=stop, on_ready=on_ready)
    stop = stop or threading.Event()
    instance = o.instance or f"{socket.gethostname()}-{os.getpid()}"
    pkg = resolve(o.model)
    predictor = Predictor(pkg, runtime=o.runtime)  # type: ignore[arg-type]
    fs = _feature_set(o, pkg)
    store = open_store(o.store or Settings().store_url)
    opened: list[Any] = [store]
    health: HealthServer | None = None
    try:
        source = _source(o, instance)
        opened.append(source)
        shared: dict[str, Any] = {}
        sink = _sink(o.sink, o, instance, shared)
        dlq = _sink(o.dlq, o, instance, shared) if o.dlq else None
        opened += [s for s in (dlq, sink) if s is not None]
        sinks: list[Sink | None] = [sink, dlq]
        delivery = _Transactional(sinks, source) if o.exactly_once else None
        metrics = StreamMetrics(prometheus=o.metrics_port is not None)
        processor = StreamProcessor(
            predictor, fs, source, sinks, store,
            group=o.group, delivery=delivery, threshold=o.threshold, id_field=o.id_field,
            with_features=o.with_features, batch_size=o.events_per_batch, max_wait_ms=o.max_wait_ms,
            commit_interval_ms=o.commit_interval_ms,
            max_keys=o.max_keys, metrics=metrics,
        )  # fmt: skip
        metrics.lag = source.lag
        if o.metrics_port is not None:
            health = HealthServer(metrics, processor.healthy, o.metrics_port, host=o.metrics_host)
        processor.start()
        if on_ready is not None:
            on_ready(processor, health)
        batches = 0
        # What is loaded by now (the model, its runtime, the libraries) lives as long as the job: kept out
        # of the garbage collector's full passes, which otherwise rescan it as keys' state piles up (a
        # quarter of the processor's time, measured). The job's own objects are collected as usual.
        gc.freeze()
        while not stop.is_set():
            report = processor.step()
            batches += report.polled > 0
            if source.finished and not report.polled and processor.settled:
                break  # read to its end and checkpointed (a refused checkpoint sent the source back)
        if not processor.checkpoint():
            raise UnavailableError(
                "the last checkpoint could not be written: the work since the one before is read again "
                "on the next start"
            )
        counts = metrics.counts
        dead = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("dead_letter:")}
        return StreamSummary(counts["decided"], dead, batches)
    finally:
        gc.unfreeze()
        if health is not None:
            health.close()
        for part in reversed(opened):
            try:
                part.close()
            except Exception as exc:  # closing must not hide the job's own error
                log.warning("closing %s failed: %s", type(part).__name__, exc)
