"""Prometheus metrics of the server (``GET /metrics``).

With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set by the runner before the workers start),
every worker writes its values to shared files and a scrape of any worker reports the sum over all of
them - prometheus_client's multiprocess mode."""

from __future__ import annotations

import bisect
import math
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fourfold.online.admission import Admission

__all__ = ["Metrics"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_QUEUE = (0.0, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "fourfold_requests_total", "Requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "fourfold_request_seconds", "Request latency.", ["route"], buckets=_LATENCY, registry=r
        )
        self.feature_fetch = Histogram(
            "fourfold_feature_fetch_seconds",
            "Online feature store read latency.",
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_rows = Histogram(
            "fourfold_batch_rows",
            "Rows per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 512),
            registry=r,
        )
        self.cache = Counter("fourfold_cache_total", "Prediction cache lookups.", ["result"], registry=r)
        self.degraded = Counter(
            "fourfold_degraded_total", "Requests answered from feature defaults.", ["reason"], registry=r
        )
        self.rejected = Counter(
            "fourfold_rejected_total",
            "Requests refused by admission with 503 + Retry-After, by reason: queue_full, overloaded "
            "(a standing queue), queue_timeout (waited past queue_timeout_ms), deadline (too little of "
            "it left for the route's budgets). Not in fourfold_requests_total.",
            ["reason"],
            registry=r,
        )
        self.queue_time = Histogram(
            "fourfold_queue_seconds",
            "Time a request waited for admission (0 when a slot was free), admitted or refused.",
            buckets=_QUEUE,
            registry=r,
        )
        self.admission_limit = Gauge(
            "fourfold_admission_limit", "Requests in flight admission allows now (summed over workers).",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.queued = Gauge(
            "fourfold_queued_requests", "Requests waiting for admission.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.unknown_entity = Counter(
            "fourfold_unknown_entities_total",
            "Entities asked for that the online store knows nothing of (scored on empty history and "
            "defaults, or refused with 404 when the feature set says so).",
            registry=r,
        )
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.inflight = Gauge(
            "fourfold_inflight_requests", "Requests in flight (the queue depth).", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.model = Gauge(
            "fourfold_model_info", "The model version served.", ["name", "version", "runtime"], registry=r,
            multiprocess_mode="liveall",
        )  # fmt: skip

        self.cache_hit, self.cache_miss = self.cache.labels("hit"), self.cache.labels("miss")
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._pending: list[tuple[str, int, float]] = []
        self._read_inflight: Any = None
        self._admission: Admission | None = None
        self._rejected_seen: dict[str, int] = {}

    def count(self, route: str, status: int, seconds: float) -> None:
        """One finished request. Buffered in plain lists and applied by :meth:`flush` (every 50 ms,
        and before a scrape): a Prometheus update per request costs more than the request's
        routing, and in multiprocess mode each one is a write to a shared file."""
        self._pending.append((route, status, seconds))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        groups: dict[tuple[str, int], list[float]] = {}
        for route, status, seconds in pending:
            groups.setdefault((route, status), []).append(seconds)
        for key, seconds_list in groups.items():
            pair = self._children.get(key)
            if pair is None:
                pair = self._children[key] = (
                    self.requests.labels(key[0], str(key[1])), self.latency.labels(key[0])
                )  # fmt: skip
            pair[0].inc(len(seconds_list))
            _observe_many(pair[1], seconds_list)
        if self._read_inflight is not None and self.multiprocess:
            self.inflight.set(self._read_inflight())
        gate = self._admission
        if gate is not None:
            for reason, total in gate.rejected.items():
                if total != self._rejected_seen.get(reason, 0):
                    self.rejected.labels(reason).inc(total - self._rejected_seen.get(reason, 0))
                    self._rejected_seen[reason] = total
            waits, gate.waits = gate.waits, []
            entered, gate.entered = gate.entered, 0
            if waits or entered:
                _observe_many(self.queue_time, waits, zeros=entered)
            self.admission_limit.set(gate.limit.value)
            self.queued.set(gate.queued)

    def track_admission(self, gate: Admission) -> None:
        """Report the gate's refusals, queue times, limit and queue (applied at each flush)."""
        self._admission = gate
        for reason in gate.rejected:
            self.rejected.labels(reason)  # every reason shows, at 0 until it happens

    def set_model(self, name: str, version: str, runtime: str) -> None:
        self.model.clear()
        self.model.labels(name, version, runtime).set(1)

    def track_inflight(self, read: Any) -> None:
        """Report in-flight requests: read at scrape time in one process; set per request with workers."""
        self._read_inflight = read
        if not self.multiprocess:
            self.inflight.set_function(read)

    def render(self) -> bytes:
        self.flush()
        if self.multiprocess:
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)

    def close(self) -> None:
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _observe_many(child: Any, values: list[float], zeros: int = 0) -> None:
    """``child.observe(v)`` for every value (and ``zeros`` times 0.0), as one update per bucket (in
    multiprocess mode each update is a write to a shared file). Uses the histogram's value slots directly,
    as ``observe`` does; falls back to ``observe`` should prometheus_client change them."""
    bounds, buckets, total = (
        getattr(child, "_upper_bounds", None),
        getattr(child, "_buckets", None),
        getattr(child, "_sum", None),
    )
    if bounds is None or buckets is None or total is None:
        for v in [*values, *[0.0] * zeros]:
            child.observe(v)
        return
    counts = [0] * len(bounds)
    counts[bisect.bisect_left(bounds, 0.0)] += zeros
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1  # the first bound >= v, as observe picks it
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)
    total.inc(math.fsum(values))
