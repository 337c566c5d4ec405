"""The stream's Prometheus metrics and its ``/healthz`` + ``/metrics`` endpoint.

    fourfold_stream_events_total{outcome="decided"|"dead_letter"}
    fourfold_stream_dead_letters_total{reason="malformed"|"invalid"|"late"}
    fourfold_stream_event_to_decision_seconds     histogram: the log's append time -> decision delivered
    fourfold_stream_batch_seconds                 histogram: one poll batch, poll to commit
    fourfold_stream_lag{partition}                messages behind (produced minus read)
    fourfold_stream_checkpoint_age_seconds        since the last checkpoint landed
    fourfold_stream_partitions                    partitions owned now

Metrics need ``prometheus-client`` (the ``stream`` extra); without it the counters are kept in memory
only (``StreamMetrics.counts``) and no endpoint is served.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fourfold.errors import InvalidOptionError
from fourfold.extras import require

__all__ = ["HealthServer", "StreamMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StreamMetrics:
    """Counters and histograms of one stream process (a private registry)."""

    def __init__(self, *, prometheus: bool = True) -> None:
        self.counts: Counter[str] = Counter()
        self.registry: Any = None
        self.checkpoint_ms: Callable[[], int | None] = lambda: None
        self.lag: Callable[[], Mapping[int, int]] = dict
        self.partitions: Callable[[], int] = lambda: 0
        try:
            import prometheus_client as pc
            from prometheus_client.core import GaugeMetricFamily
            from prometheus_client.registry import Collector
        except ImportError:
            return
        if not prometheus:
            return
        self.registry = reg = pc.CollectorRegistry()
        self._events = pc.Counter("fourfold_stream_events", "Events handled", ["outcome"], registry=reg)
        self._dead = pc.Counter("fourfold_stream_dead_letters", "Dead letters", ["reason"], registry=reg)
        self._latency = pc.Histogram(
            "fourfold_stream_event_to_decision_seconds",
            "From the log's append time to the decision delivered",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self._batch = pc.Histogram(
            "fourfold_stream_batch_seconds", "One poll batch", buckets=_LATENCY_BUCKETS, registry=reg
        )
        metrics = self

        class _Live(Collector):
            def collect(self) -> Any:
                lag = GaugeMetricFamily("fourfold_stream_lag", "Messages behind", labels=["partition"])
                for p, n in sorted(metrics.lag().items()):
                    lag.add_metric([str(p)], n)
                yield lag
                age = GaugeMetricFamily(
                    "fourfold_stream_checkpoint_age_seconds", "Since the last checkpoint landed"
                )
                last = metrics.checkpoint_ms()
                age.add_metric([], -1.0 if last is None else max(0.0, time.time() - last / 1000))
                yield age
                owned = GaugeMetricFamily("fourfold_stream_partitions", "Partitions owned now")
                owned.add_metric([], metrics.partitions())
                yield owned

        reg.register(_Live())

    def batch(self, decided: int, dead: Sequence[str], seconds: float, latencies_s: Sequence[float]) -> None:
        self.counts["decided"] += decided
        self.counts["dead_letter"] += len(dead)
        for code in dead:
            self.counts[f"dead_letter:{code}"] += 1
        if self.registry is None:
            return
        if decided:
            self._events.labels("decided").inc(decided)
        if dead:
            self._events.labels("dead_letter").inc(len(dead))
            for code, n in Counter(dead).items():
                self._dead.labels(code).inc(n)
        self._batch.observe(seconds)
        observe = self._latency.observe
        for s in latencies_s:
            observe(s)

    def render(self) -> bytes:
        if self.registry is None:
            return b""
        import prometheus_client as pc

        return bytes(pc.generate_latest(self.registry))


class _HTTP6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HealthServer:
    """``/healthz`` (200 while the loop is alive, else 503) and ``/metrics`` on ``host``:``port``."""

    def __init__(
        self,
        metrics: StreamMetrics,
        healthy: Callable[[], tuple[bool, str]],
        port: int,
        *,
        host: str = "127.0.0.1",
    ) -> None:
        if not 0 <= port <= 65535:
            raise InvalidOptionError(f"--metrics-port must be 0..65535, got {port}")
        if metrics.registry is None:
            require("prometheus_client", "stream", "the stream's /metrics endpoint")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    ok, why = healthy()
                    self._send(200 if ok else 503, why.encode(), "text/plain")
                elif self.path == "/metrics":
                    self._send(200, metrics.render(), "text/plain; version=0.0.4")
                else:
                    self._send(404, b"not found: /healthz, /metrics", "text/plain")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            server_class = _HTTP6Server if ":" in host else ThreadingHTTPServer
            self.server = server_class((host, port), Handler)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise InvalidOptionError(
                f"--metrics-host/--metrics-port: cannot listen on {host}:{port}: {why}"
            ) from None
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="fourfold-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
