"""Admission: the adaptive limit and the queue on a hand-moved clock, then the server's guard and the HTTP
protocol - a refused request never reaches the model, the body or the store."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa
import pytest
from pydantic import ValidationError

from fourfold.online.admission import AdaptiveLimit, Admission, Rejected
from fourfold.online.app import build_app
from fourfold.online.asgi import Router
from fourfold.online.protocol import REFUSED, AdmissionProtocol
from fourfold.online.settings import ServeSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _window(limit: AdaptiveLimit, clock: Clock, latency_s: float, *, saturated: bool = True) -> None:
    """One 1 s window of 20 requests admitted at its start that took ``latency_s`` each (target 50 ms)."""
    start = clock.now
    clock.now = start + latency_s
    for _ in range(20):
        if saturated:
            limit.saturated()
        limit.observe(latency_s, target_s=0.05)
    clock.now = start + 1.0
    limit.observe(latency_s, target_s=0.05)  # the first sample past the window closes it


def _limit(initial: float, clock: Clock, lo: int = 4, hi: int = 128) -> AdaptiveLimit:
    return AdaptiveLimit(initial, min_limit=lo, max_limit=hi, window_s=1.0, hold_s=2.0, clock=clock)


def _serve(limit: AdaptiveLimit, clock: Clock, capacity: float, windows: int) -> list[float]:
    """A server whose latency is its requests in flight over its capacity (Little's law)."""
    seen = []
    for _ in range(windows):
        _window(limit, clock, limit.value / capacity)
        seen.append(limit.value)
    return seen


# -- the adaptive limit ---------------------------------------------------------------------------------
def test_the_limit_shrinks_when_latency_rises_and_grows_back_when_it_falls() -> None:
    clock = Clock()
    limit = _limit(64, clock)
    first = _serve(limit, clock, capacity=640, windows=30)  # the target is met at 640/s x 50 ms = 32
    assert first[0] == 32  # twice the target: halved at once
    assert all(25 <= v <= 40 for v in first[5:])
    slower = _serve(limit, clock, capacity=160, windows=30)  # the model slows down: 8 meet the target
    assert all(6 <= v <= 11 for v in slower[10:])
    faster = _serve(limit, clock, capacity=640, windows=30)  # and recovers: the limit grows back
    assert faster[1] > slower[-1]
    assert faster == sorted(faster[:8]) + faster[8:]  # by sqrt(limit) a window, up to the target
    assert all(25 <= v <= 40 for v in faster[10:])
    _serve(limit, clock, capacity=10, windows=30)
    assert limit.value == 4  # the floor
    _serve(limit, clock, capacity=1e6, windows=60)
    assert limit.value == 128  # the ceiling


def test_a_decrease_that_does_not_make_requests_faster_is_undone() -> None:
    """Latency the limit does not cause (a slow store, a loop busy refusing a flood): a smaller limit
    would refuse more for nothing - the cut is undone and cuts wait, longer each time."""
    clock = Clock()
    limit = _limit(64, clock)
    seen = []
    for _ in range(30):
        _window(limit, clock, 0.2)  # four times the target, whatever the limit
        seen.append(limit.value)
    assert min(seen) == 32  # tried, never further
    tries = [i for i, v in enumerate(seen) if v == 32]
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps == [3, 5, 9, 11]  # held off 2, 4, 8, then 10 s (the most) after each failed try
    assert seen.count(64) == 25


def test_the_limit_grows_only_when_it_is_reached_and_moves_only_on_whole_windows() -> None:
    clock = Clock()
    limit = _limit(20, clock, lo=1, hi=100)
    _window(limit, clock, 0.01, saturated=False)
    assert limit.value == 20  # fast, but nobody was turned away: no reason to admit more
    for _ in range(200):
        limit.observe(1.0, target_s=0.05)  # very slow, but the window is not over yet
    assert limit.value == 20
    clock.now += 1.0
    limit.observe(1.0, target_s=0.05)
    assert limit.value == 10


def test_the_90th_percentile_moves_the_limit_not_one_slow_request() -> None:
    clock = Clock()
    limit = _limit(50, clock, lo=1, hi=100)
    limit.saturated()
    for latency in [0.01] * 19 + [5.0]:  # a GC pause, a reload
        limit.observe(latency, target_s=0.05)
    clock.now += 1.0
    limit.observe(0.01, target_s=0.05)
    assert limit.value > 50


def test_a_fixed_limit_never_moves_and_bounds_are_checked() -> None:
    clock = Clock()
    limit = _limit(8, clock, lo=8, hi=8)
    _window(limit, clock, 1.0)
    assert limit.fixed
    assert limit.value == 8
    with pytest.raises(ValueError, match="min_limit <= max_limit"):
        AdaptiveLimit(8, min_limit=9, max_limit=8)


# -- the queue ------------------------------------------------------------------------------------------
def _gate(clock: Clock, limit: int = 1, max_queue: int = 8, timeout_s: float = 0.01) -> Admission:
    fixed = AdaptiveLimit(limit, min_limit=limit, max_limit=limit, clock=clock)
    return Admission(fixed, max_queue=max_queue, queue_timeout_s=timeout_s, clock=clock)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_waiter_takes_the_slot_that_frees_oldest_first() -> None:
    clock = Clock()
    gate = _gate(clock)

    async def main() -> list[int]:
        order: list[int] = []
        assert gate.try_enter()

        async def waiter(i: int) -> None:
            await gate.wait()
            order.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
        await _settle()
        assert gate.queued == 3
        assert gate.inflight == 1
        for _ in range(3):
            clock.now += 0.002
            gate.leave(started=0.0, target_s=1.0)
            await _settle()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == [0, 1, 2]
    assert gate.inflight == 1  # the last waiter holds the slot
    assert sorted(round(w, 3) for w in gate.waits) == [0.002, 0.004, 0.006]


def test_waiters_past_their_budget_are_refused_and_counted() -> None:
    clock = Clock()
    gate = _gate(clock)

    async def main() -> list[object]:
        assert gate.try_enter()
        first = asyncio.create_task(gate.wait())
        await _settle()
        clock.now = 0.006
        second = asyncio.create_task(gate.wait())
        await _settle()
        clock.now = 0.012  # the first waited 12 ms (budget 10), the second 6
        gate.expire()
        await _settle()
        assert first.done()
        assert not second.done()
        gate.leave(started=0.0, target_s=1.0)  # the second gets the slot
        return list(await asyncio.gather(first, second, return_exceptions=True))

    first, second = asyncio.run(main())
    assert isinstance(first, Rejected)
    assert first.reason == "queue_timeout"
    assert second == pytest.approx(0.006)
    assert gate.rejected["queue_timeout"] == 1


def test_a_standing_queue_is_served_newest_first_and_refuses_arrivals() -> None:
    clock = Clock()
    gate = _gate(clock, limit=2, max_queue=8)

    async def main() -> list[int]:
        order: list[int] = []
        assert gate.try_enter()
        assert gate.try_enter()

        async def waiter(i: int) -> None:
            await gate.wait()
            order.append(i)

        tasks = []
        for i in range(4):  # arrive at 0, 3, 6, 9 ms: the queue never empties
            tasks.append(asyncio.create_task(waiter(i)))
            await _settle()
            clock.now += 0.003
        assert gate.refusal() == "overloaded"  # stood 12 ms > 10 ms: new arrivals are refused at once
        gate.leave(started=0.0, target_s=1.0)  # the oldest (12 ms) is past its budget: refused
        gate.leave(started=0.0, target_s=1.0)
        await _settle()
        assert order == [3, 2]  # the freshest first: they still meet their deadline
        clock.now += 0.005
        gate.expire()  # waiter 1 waited 14 ms
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [type(r).__name__ for r in results] == ["Rejected", "Rejected", "NoneType", "NoneType"]
        return order

    assert asyncio.run(main()) == [3, 2]
    assert gate.rejected["queue_timeout"] == 2
    assert gate.refusal() is None  # the queue emptied: no longer standing


def test_refusal_reasons_and_a_cancelled_waiter_gives_its_slot_back() -> None:
    clock = Clock()
    gate = _gate(clock, limit=1, max_queue=1)

    async def main() -> None:
        assert gate.refusal() is None
        assert gate.try_enter()
        assert gate.refusal() is None  # a place in the queue
        waiting = asyncio.create_task(gate.wait())
        await _settle()
        assert gate.refusal() == "queue_full"
        with pytest.raises(Rejected, match="queue_full"):
            await gate.wait()
        waiting.cancel()  # the deadline passed while it waited
        await _settle()
        gate.leave(started=0.0, target_s=1.0)
        assert gate.inflight == 0
        assert gate.queued == 0

    asyncio.run(main())
    assert gate.rejected["queue_full"] == 1


# -- the server's guard ---------------------------------------------------------------------------------
class Call:
    """One in-process ASGI request; ``reads`` counts the times the app asked for the body."""

    def __init__(self, app: Router, path: str, body: dict[str, Any], **headers: str) -> None:
        self.app, self.path, self.raw = app, path, orjson.dumps(body)
        self.extra = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        self.reads = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    async def __call__(self) -> Call:
        scope = {"type": "http", "method": "POST", "path": self.path, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(self.raw)).encode()),
            *self.extra]}  # fmt: skip

        async def receive() -> dict[str, Any]:
            self.reads += 1
            return {"type": "http.request", "body": self.raw, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            else:
                self.body += message["body"]

        await self.app(scope, receive, send)
        return self


class CountingStore:
    """The server's store, keeping the entities each read asked for."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.keys: set[str] = set()

    async def read(self, namespace: str, keys: list[str], *args: Any, **kwargs: Any) -> Any:
        self.keys.update(keys)
        return await self.store.read(namespace, keys, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _slow(score: Callable[[Any], Any], clock: Clock, calls: list[int]) -> Callable[[Any], Any]:
    def slow(x: Any) -> Any:  # a model that takes 50 ms of the admission's clock per call
        calls.append(len(x))
        clock.now += 0.05
        return score(x)

    return slow


def _request(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("user_id", "amount", "merchant_category", "device")}


def _settings(registered: str, store_url: str, **kw: Any) -> ServeSettings:
    return ServeSettings(model=registered, store=store_url, reload_interval_s=0, access_log=False,
                         cache_size=0, admission="fixed", **kw)  # fmt: skip


def test_requests_queued_past_their_budget_get_503_and_never_reach_the_model_or_the_store(
    registered: str, store_url: str, fraud_log: pa.Table
) -> None:
    clock = Clock()
    app = build_app(_settings(registered, store_url, max_inflight=1, max_queue=8, queue_timeout_ms=10),
                    monotonic=clock)  # fmt: skip
    server = app.state["server"]
    rows = fraud_log.slice(15_000, 4).to_pylist()
    calls: list[int] = []

    async def main() -> list[Call]:
        async with server.lifespan(app):
            served = server.holder.current
            served.batcher.score = _slow(served.batcher.score, clock, calls)
            server.store = store = CountingStore(server.store)
            # the first takes the only slot; the others queue while the model runs 50 ms (> 10 ms)
            done = await asyncio.gather(*(Call(app, "/predict", _request(r))() for r in rows))
            assert store.keys == {rows[0]["user_id"]}
            server.metrics.flush()
            assert 'fourfold_rejected_total{reason="queue_timeout"} 3.0' in server.metrics.render().decode()
            return list(done)

    first, *rest = asyncio.run(main())
    assert first.status == 200, first.body
    assert calls == [1]  # the model scored the first request only
    for call in rest:
        assert call.status == 503
        assert call.headers["retry-after"] == "1"
        assert orjson.loads(call.body) == {"error": "server overloaded, retry later"}
        assert call.reads == 0  # the body of a refused request is never read
    assert first.reads == 1


def test_a_request_refused_on_arrival_touches_neither_body_nor_store_and_is_counted_not_logged(
    registered: str, store_url: str, fraud_log: pa.Table, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    settings = _settings(registered, store_url, max_inflight=1, max_queue=0)
    settings = settings.model_copy(update={"access_log": True})
    app = build_app(settings, monotonic=clock)
    server = app.state["server"]
    rows = fraud_log.slice(15_000, 6).to_pylist()
    caplog.set_level(logging.INFO, logger="fourfold.access")

    async def main() -> list[Call]:
        async with server.lifespan(app):
            server.store = store = CountingStore(server.store)
            done = await asyncio.gather(*(Call(app, "/predict", _request(r))() for r in rows))
            assert store.keys == {rows[0]["user_id"]}
            seen = server._log_rejections(dict.fromkeys(server.admission.rejected, 0), 0.0)
            assert seen["queue_full"] == 5
            server.metrics.flush()
            text = server.metrics.render().decode()
            assert 'fourfold_rejected_total{reason="queue_full"} 5.0' in text
            assert "fourfold_admission_limit 1.0" in text
            assert "fourfold_queue_seconds_count 1.0" in text  # the admitted one, which did not wait
            return list(done)

    first, *rest = asyncio.run(main())
    assert first.status == 200
    assert [c.status for c in rest] == [503] * 5
    assert all(c.reads == 0 and c.headers["retry-after"] == "1" for c in rest)
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "fourfold.access"]
    assert [line.get("status") for line in lines].count(200) == 1  # the admitted request's own line
    summaries = [line for line in lines if "rejected" in line]
    assert len(summaries) == 1
    assert summaries[0]["rejected"] == 5
    assert summaries[0]["reasons"] == {"queue_full": 5}


def test_a_queued_request_without_time_left_for_the_store_is_refused(
    registered: str, store_url: str, fraud_log: pa.Table
) -> None:
    """After its wait, a /predict whose deadline no longer holds the feature fetch's budget is refused."""
    app = build_app(_settings(registered, store_url, max_inflight=1, max_queue=4, queue_timeout_ms=50,
                           feature_timeout_ms=40))  # fmt: skip
    server = app.state["server"]
    first, second = fraud_log.slice(15_000, 2).to_pylist()
    calls: list[int] = []

    def slow(score: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(x: Any) -> Any:  # a model that takes 10 ms (of the loop's own time)
            calls.append(len(x))
            time.sleep(0.01)
            return score(x)

        return run

    async def main() -> list[Call]:
        async with server.lifespan(app):
            served = server.holder.current
            served.batcher.score = slow(served.batcher.score)
            server.store = store = CountingStore(server.store)
            holder = asyncio.create_task(Call(app, "/predict", _request(first))())
            await asyncio.sleep(0)  # the first holds the slot; the second (45 ms to live) queues
            queued = await Call(app, "/predict", _request(second), x_deadline_ms="45")()
            done = [await holder, queued]
            assert store.keys == {first["user_id"]}
            return done

    holder, queued = asyncio.run(main())
    assert holder.status == 200
    assert calls == [1]
    assert queued.status == 503
    assert queued.reads == 0
    assert server.admission.rejected["deadline"] == 1


def test_probes_are_never_refused(registered: str, store_url: str) -> None:
    app = build_app(_settings(registered, store_url, max_inflight=1, max_queue=0))
    server = app.state["server"]

    async def main() -> int:
        async with server.lifespan(app):
            assert server.admission.try_enter()  # the only slot is taken
            statuses = []
            for path in ("/healthz", "/readyz", "/metrics"):
                seen: list[int] = []

                async def send(message: dict[str, Any], seen: list[int] = seen) -> None:
                    if message["type"] == "http.response.start":
                        seen.append(message["status"])

                scope = {"type": "http", "method": "GET", "path": path, "headers": []}
                await app(scope, None, send)  # type: ignore[arg-type]
                statuses += seen
            return statuses.count(200)

    assert asyncio.run(main()) == 3


def test_settings_refuse_an_admission_that_cannot_work() -> None:
    with pytest.raises(ValidationError, match="min_inflight"):
        ServeSettings(min_inflight=300, max_inflight=256)
    with pytest.raises(ValidationError, match="queue_timeout_ms"):
        ServeSettings(queue_timeout_ms=100, deadline_ms=100)
    with pytest.raises(ValidationError, match="target_latency_ms"):
        ServeSettings(target_latency_ms=150)
    assert ServeSettings().target_latency_s == pytest.approx(0.05)
    assert ServeSettings(deadline_ms=300).target_latency_s == pytest.approx(0.15)
    assert ServeSettings(max_inflight=100).inflight_floor == 50  # a limit never more than halved
    assert ServeSettings(max_inflight=100, min_inflight=10).inflight_floor == 10


# -- the HTTP protocol ----------------------------------------------------------------------------------
class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_the_protocol_refuses_a_post_before_uvicorn_makes_a_request_of_it(registered: str) -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    app = build_app(ServeSettings(model=registered, admission="fixed", max_inflight=1, max_queue=0))
    gate = app.state["admission"]
    body = b'{"inputs": []}'
    head = b"POST /v2/models/fraud/infer HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n"
    post = head % len(body) + body
    seen: list[str] = []

    async def main() -> None:
        config = Config(app, http="httptools", lifespan="off", log_level="warning")
        config.load()
        state = ServerState()
        protocol = AdmissionProtocol(config, state, {}, asyncio.get_running_loop())
        transport = Transport()
        protocol.connection_made(transport)
        assert gate.try_enter()  # the only slot is taken
        protocol.data_received(post + post)  # two requests, one after the other on one connection
        assert transport.written == [REFUSED, REFUSED]
        assert not state.tasks
        assert not transport.closed
        gate.release()

        async def spy(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        protocol.app = spy  # the slot is free: the next request goes on to the app
        protocol.data_received(post.replace(b"host: x", b"host: x\r\nconnection: close"))
        await asyncio.sleep(0.01)
        assert seen == ["/v2/models/fraud/infer"]
        assert gate.try_enter()
        closing = AdmissionProtocol(config, state, {}, asyncio.get_running_loop())
        closing_transport = Transport()
        closing.connection_made(closing_transport)
        closing.data_received(post.replace(b"host: x", b"host: x\r\nconnection: close"))
        assert closing_transport.written == [REFUSED]
        assert closing_transport.closed

    asyncio.run(main())
    assert gate.rejected["queue_full"] == 3
    assert b"retry-after: 1\r\n" in REFUSED
    assert REFUSED.startswith(b"HTTP/1.1 503 ")
