"""The Embedded + Online cascade against a real fourfold server: local answers for confident rows,
server answers for the rest, the local answer when the server is down, slow or must not be asked."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from conftest import FEATURES, build
from fourfold import Predictor, save_model
from fourfold.edge import CascadeModel, EdgeInputError
from fourfold.embedded.export import export_bundle
from fourfold.online.settings import ServeSettings
from serving import free_port, running


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cascade")
    model, x, table = build("xgboost")
    pkg = save_model(model, tmp / "pkg", name="fraud", sample=table)
    export_bundle(pkg.path, "onnx", tmp / "edge")
    settings = ServeSettings(model=str(pkg.path), access_log=False, workers=1)
    with running(settings) as base:
        yield {"pkg": pkg, "x": x, "edge": tmp / "edge", "url": base}


def _rows(x: np.ndarray) -> list[dict[str, float]]:
    return [{name: float(r[j]) for j, name in enumerate(FEATURES)} for r in x]


def test_confident_rows_stay_local_the_rest_go_to_the_server(setup: dict[str, Any]) -> None:
    rows = _rows(setup["x"][:300])
    truth = Predictor(setup["pkg"]).predict(setup["x"][:300])["score"]
    with CascadeModel(setup["edge"], setup["url"], low=0.2, high=0.8) as c:
        out = [c.predict_one(r) for r in rows]
    sources = {o["source"] for o in out}
    assert sources == {"local", "server"}
    for o, t in zip(out, truth, strict=True):
        assert o["score"] == pytest.approx(float(t), abs=1e-5)
        if o["source"] == "local":
            assert not 0.2 <= o["score"] <= 0.8
        else:
            assert 0.2 <= o["local_score"] <= 0.8
            assert "model_version" in o


def test_oip_protocol(setup: dict[str, Any]) -> None:
    row = _rows(setup["x"][:1])[0]
    with CascadeModel(setup["edge"], setup["url"], low=0.0, high=1.0, protocol="oip") as c:
        out = c.predict_one(row)
    assert out["source"] == "server"
    assert out["score"] == pytest.approx(out["local_score"], abs=1e-5)


def test_private_rows_never_leave_the_device(setup: dict[str, Any]) -> None:
    with _listener() as (url, hits):
        c = CascadeModel(setup["edge"], url, low=0.0, high=1.0, allow_remote=False)
        out = c.predict_one(_rows(setup["x"][:1])[0])
        out2 = CascadeModel(setup["edge"], url, low=0.0, high=1.0).predict_one(
            _rows(setup["x"][:1])[0], allow_remote=False
        )
        time.sleep(0.1)
    assert out["source"] == out2["source"] == "local"
    assert out["private"] is True
    assert hits == []


def test_a_bad_row_raises_and_sends_nothing(setup: dict[str, Any]) -> None:
    with _listener() as (url, hits):
        with (
            CascadeModel(setup["edge"], url, low=0.0, high=1.0) as c,
            pytest.raises(EdgeInputError, match="'x0'"),
        ):
            c.predict_one({**_rows(setup["x"][:1])[0], "x0": "abc"})
        time.sleep(0.1)
    assert hits == []


def test_server_down_gives_the_local_answer_then_stops_asking(setup: dict[str, Any]) -> None:
    now = [0.0]
    dead = f"http://127.0.0.1:{free_port()}"
    c = CascadeModel(
        setup["edge"], dead, low=0.0, high=1.0, failures_to_open=3, cooldown_s=5, clock=lambda: now[0]
    )
    row = _rows(setup["x"][:1])[0]
    first = [c.predict_one(row) for _ in range(3)]
    assert all(o["source"] == "fallback" and "unreachable" in o["reason"] for o in first)
    skipped = c.predict_one(row)
    assert skipped["source"] == "fallback"
    assert "skipped" in skipped["reason"]
    assert skipped["score"] == pytest.approx(first[0]["score"])
    now[0] = 6.0  # after the cooldown the server is asked again
    assert "unreachable" in c.predict_one(row)["reason"]


def test_a_slow_server_gives_the_local_answer_within_the_budget(setup: dict[str, Any]) -> None:
    with (
        _listener(delay=1.0) as (url, hits),
        CascadeModel(setup["edge"], url, low=0.0, high=1.0, budget_ms=100) as c,
    ):
        t0 = time.perf_counter()
        out = c.predict_one(_rows(setup["x"][:1])[0])
        took = time.perf_counter() - t0
    assert out["source"] == "fallback"
    assert "budget" in out["reason"]
    assert took < 0.6
    assert len(hits) == 1


def test_a_failing_server_is_a_fallback_not_an_error(setup: dict[str, Any]) -> None:
    with _listener(status=503) as (url, _), CascadeModel(setup["edge"], url, low=0.0, high=1.0) as c:
        out = c.predict_one(_rows(setup["x"][:1])[0])
    assert out["source"] == "fallback"
    assert "503" in out["reason"]


def test_options_are_checked(setup: dict[str, Any]) -> None:
    cases = [
        ({"low": 0.9, "high": 0.1}, "low <= high"),
        ({"low": -1, "high": 0.5}, "low <= high"),
        ({"low": 0.1, "high": 0.9, "protocol": "grpc"}, "protocol"),
        ({"low": 0.1, "high": 0.9, "budget_ms": 0}, "budget_ms"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            CascadeModel(setup["edge"], setup["url"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="server_url"):
        CascadeModel(setup["edge"], "ftp://x", low=0.1, high=0.9)


@contextmanager
def _listener(delay: float = 0.0, status: int = 200) -> Iterator[tuple[str, list[bytes]]]:
    """A raw TCP server that records every connection's first bytes (a fault a real server cannot be
    asked for on demand: slowness, a fixed status)."""
    hits: list[bytes] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    hits.append(conn.recv(65536))
                    time.sleep(delay)
                    body = b'{"score": 0.5, "label": 0}'
                    conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", hits
    finally:
        stop.set()
        t.join(timeout=5)
        sock.close()


def test_a_restarted_server_is_asked_again_on_a_new_connection(setup: dict[str, Any]) -> None:
    """The kept-alive connection dies with the server it went to (a restart, an idle timeout): the next
    row goes to the new server on a new connection, not to the fallback."""
    port = free_port()
    settings = ServeSettings(model=str(setup["pkg"].path), access_log=False, workers=1)
    rows = _rows(setup["x"][:2])
    url = f"http://127.0.0.1:{port}"
    with CascadeModel(setup["edge"], url, low=0.0, high=1.0, budget_ms=5_000) as cascade:
        with running(settings, port=port):
            assert cascade.predict_one(rows[0])["source"] == "server"
        with running(settings, port=port):  # the same address, a new server
            again = cascade.predict_one(rows[1])
            assert again["source"] == "server", again
            assert again["score"] == Predictor(setup["pkg"]).predict_one(rows[1])["score"]
