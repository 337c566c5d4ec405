"""The stream's /healthz and /metrics server (``--metrics-port``, ``--metrics-host``)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from fourfold.errors import InvalidOptionError
from fourfold.stream.metrics import HealthServer, StreamMetrics


def _get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_healthz_follows_the_loop_and_metrics_count_the_batches() -> None:
    state = {"ok": True}
    metrics = StreamMetrics(prometheus=True)
    server = HealthServer(metrics, lambda: (state["ok"], "ok" if state["ok"] else "stalled"), 0)
    try:
        assert _get(server.port, "/healthz") == (200, b"ok")
        state["ok"] = False
        assert _get(server.port, "/healthz") == (503, b"stalled")
        metrics.batch(7, ["late", "late", "malformed"], 0.01, [0.02] * 7)
        status, body = _get(server.port, "/metrics")
        assert status == 200
        text = body.decode()
        assert 'fourfold_stream_dead_letters_total{reason="late"} 2.0' in text
        assert 'fourfold_stream_dead_letters_total{reason="malformed"} 1.0' in text
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.close()


def test_a_port_in_use_names_the_options_and_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidOptionError, match=rf"--metrics-port.*127\.0\.0\.1:{port}"):
            HealthServer(StreamMetrics(), lambda: (True, "ok"), port)


def test_an_address_that_is_not_this_machines_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="--metrics-host"):
        HealthServer(StreamMetrics(), lambda: (True, "ok"), 0, host="no-such-host.invalid")


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(InvalidOptionError, match="--metrics-port"):
        HealthServer(StreamMetrics(), lambda: (True, "ok"), port)


def test_an_ipv6_loopback_is_served_where_the_machine_has_one() -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.fail("this machine has no IPv6 loopback")  # every CI machine here has one
    server = HealthServer(StreamMetrics(), lambda: (True, "ok"), 0, host="::1")
    try:
        assert _get(server.port, "/healthz", host="[::1]") == (200, b"ok")
    finally:
        server.close()
