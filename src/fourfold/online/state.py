"""The online server's state and the guard every route goes through.

:class:`Server` is what lives as long as the process - the model holder, the store, the caches, the
metrics, the admission gate, the clocks, the lifecycle (load, warm, reload polling, metric flushing) -
and its :meth:`Server.route` wraps each handler in the guard: admission (a slot, a wait in the queue,
or a 503 + Retry-After before the body is read - counted, not logged one by one), bearer auth, the
deadline (504; it grows with the rows of a batch request; the queue wait counts), errors as
``{"error": ...}`` with their status (never a traceback), metrics and one JSON access-log line with the
request id. A handler gets one request's :class:`Context`; :func:`read_json` reads a JSON body within
the limit.

    >>> # server = Server(settings); endpoint = server.route("predict", predict)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import itertools
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from fourfold.errors import (
    FourfoldError,
    PayloadTooLargeError,
    RequestError,
    RowsRejectedError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedMediaTypeError,
)
from fourfold.features.stores import open_async_store
from fourfold.features.stores.base import now_ms
from fourfold.online.admission import REJECTION, RETRY_AFTER, AdaptiveLimit, Admission, Rejected
from fourfold.online.asgi import FixedResponse, Request, Response
from fourfold.online.cache import PredictionCache, SharedCache
from fourfold.online.metrics import Metrics
from fourfold.online.served import ModelHolder, Served
from fourfold.online.settings import ServeSettings
from fourfold.settings import Settings

__all__ = ["Context", "Handler", "Server", "json_response", "read_json"]

log = logging.getLogger("fourfold.online")
access = logging.getLogger("fourfold.access")
Handler = Callable[[Request, "Context"], Awaitable[Response]]
#: every refusal, one object: a refusal costs no encoding and carries no request id
REFUSAL = FixedResponse(REJECTION, 503, {"Retry-After": RETRY_AFTER})


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status, headers)


class Context:
    """What a request handler needs: the served model (read once per request), settings, cache, metrics."""

    def __init__(self, app: Server, request_id: str, deadline_s: float, scope: Any = None) -> None:
        self.server = app
        self.request_id = request_id
        self.served: Served | None = app.holder.current
        self.degraded = False
        self.deadline_s = deadline_s
        self._scope = scope  # the request's asyncio.timeout, when the server (not the client) set it

    def allow_rows(self, rows: int) -> None:
        """A request of many rows gets ``deadline_per_row_ms`` more per row than the deadline of one
        (unless the client set its own with X-Deadline-Ms): the limits agree with the budgets."""
        per_row = self.server.settings.deadline_per_row_ms / 1000
        if self._scope is None or rows <= 1 or not per_row:
            return
        extra = per_row * (rows - 1)
        when = self._scope.when()
        if when is not None:
            self._scope.reschedule(when + extra)
            self.deadline_s += extra

    def model(self) -> Served:
        if self.served is None:
            raise UnavailableError("the model is not loaded yet")
        return self.served


class Server:
    def __init__(
        self,
        settings: ServeSettings,
        clock: Callable[[], int] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        #: "now" in epoch ms, the time windows are read as of (injectable: tests, replays)
        self.clock: Callable[[], int] = clock or now_ms
        ceiling = settings.max_inflight
        floor = settings.inflight_floor if settings.admission == "adaptive" else ceiling
        mono = monotonic or time.monotonic  # the admission's clock (injectable: tests)
        limit = AdaptiveLimit(max(floor, ceiling // 4), min_limit=floor, max_limit=ceiling, clock=mono)
        self.admission = Admission(
            limit, max_queue=settings.max_queue, queue_timeout_s=settings.queue_timeout_ms / 1000, clock=mono
        )
        self.holder = ModelHolder(settings)
        self.metrics = Metrics()
        self.cache = PredictionCache(settings.cache_size, settings.cache_ttl_s)
        self.shared: SharedCache | None = None
        self.background: set[asyncio.Task[None]] = set()
        self._rid_prefix = uuid.uuid4().hex[:24]  # unique per process; a counter makes each id unique
        self._rids = itertools.count()
        self.inflight = 0
        self.ready = False
        self.token = settings.bearer()
        self.store: Any = None
        self.metrics.track_inflight(lambda: self.inflight)
        self.metrics.track_admission(self.admission)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def load(self) -> bool:
        changed = self.holder.load()
        served = self.holder.current
        if changed and served is not None:
            served.batcher.on_batch = self.metrics.batch_rows.observe
            self.metrics.set_model(served.name, served.version, served.predictor.runtime)
        return changed

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        await asyncio.to_thread(self.load)
        url = self.settings.store or Settings().store_url
        served = self.holder.current
        if served is not None and served.online is not None:
            self.store = open_async_store(url)
        # the model, its libraries and the registry are long-lived: keep them out of every GC pass
        gc.collect()
        gc.freeze()
        if self.settings.cache_url:
            self.shared = SharedCache(self.settings.cache_url, ttl_s=self.settings.cache_ttl_s)
        self.ready = True
        poller = asyncio.create_task(self._poll()) if self.settings.reload_interval_s > 0 else None
        flusher = asyncio.create_task(self._flush_metrics())
        try:
            yield
        finally:
            self.ready = False
            if poller is not None:
                poller.cancel()
            flusher.cancel()
            self.metrics.flush()
            if self.store is not None:
                await self.store.close()
            if self.shared is not None:
                await self.shared.close()
            self.metrics.close()

    async def _flush_metrics(self) -> None:
        seen, since = dict(self.admission.rejected), time.monotonic()
        while True:
            await asyncio.sleep(0.05)  # small flushes: no pause a request would notice
            self.metrics.flush()
            if time.monotonic() - since >= 1.0:
                seen, since = self._log_rejections(seen, since), time.monotonic()

    def _log_rejections(self, seen: dict[str, int], since: float) -> dict[str, int]:
        """One access-log line for the refusals since the last (a line per refusal would cost more than
        the refusal); returns the counts it reported up to."""
        now = dict(self.admission.rejected)
        reasons = {r: n - seen.get(r, 0) for r, n in now.items() if n != seen.get(r, 0)}
        if reasons and self.settings.access_log and access.isEnabledFor(logging.INFO):
            access.info(
                orjson.dumps({"rejected": sum(reasons.values()), "status": 503, "reasons": reasons,
                              "seconds": round(time.monotonic() - since, 3)}).decode()
            )  # fmt: skip
        return now

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await asyncio.to_thread(self.load)
            except Exception as exc:  # keep serving the current version
                log.warning("model reload failed, still serving the current version: %s", exc)

    # -- the guard around every route ---------------------------------------------------------------------
    def route(
        self, name: str, handler: Handler, *, probe: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        gate = self.admission

        async def endpoint(request: Request) -> Response:
            # admission first, before the body, the headers' dict or a request id: a refusal is a count
            admitted = not probe and gate.try_enter()
            if not probe and not admitted:
                reason = gate.refusal()
                if reason is not None:
                    gate.reject(reason)
                    return REFUSAL
            start = time.perf_counter()
            entered = gate.clock()
            rid = request.headers.get("x-request-id") or f"{self._rid_prefix}{next(self._rids):08x}"
            status = 500
            ctx: Context | None = None
            counted = False
            try:
                if not probe and self.token is not None:
                    auth = request.headers.get("authorization", "")
                    if not hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
                        raise UnauthorizedError("missing or wrong bearer token")
                deadline, by_client = self._deadline(request)
                ctx = Context(self, rid, deadline)
                async with asyncio.timeout(deadline) as scope:
                    ctx._scope = None if by_client else scope
                    if not probe and not admitted:
                        await gate.wait()  # the queue's wait is part of the deadline
                        admitted, entered = True, gate.clock()
                        self._check_budgets(ctx, scope)
                    self.inflight += 1
                    counted = True
                    served = ctx.served
                    if served is not None:
                        served.batcher.expected = self.inflight
                    response = await handler(request, ctx)
                status = response.status_code
            except Rejected as exc:
                if exc.reason == "deadline":
                    gate.reject("deadline")
                return REFUSAL
            except TimeoutError:
                if not probe and not counted:  # the deadline passed in the queue: never began
                    gate.reject("deadline")
                    return REFUSAL
                status = 504
                assert ctx is not None
                response = json_response(
                    {"error": f"deadline of {ctx.deadline_s * 1000:.0f} ms exceeded"}, 504
                )
            except FourfoldError as exc:
                status = exc.status
                payload: dict[str, Any] = {"error": exc.message}
                if isinstance(exc, RowsRejectedError):
                    payload["rejected"] = exc.rejected
                response = json_response(payload, status)
            except Exception:
                log.exception("unexpected error in %s (request %s)", name, rid)
                response = json_response({"error": "internal error", "request_id": rid}, 500)
            finally:
                if counted:
                    self.inflight -= 1
                    served = ctx.served if ctx is not None else None
                    if served is not None:
                        served.batcher.expected = self.inflight
                if admitted:
                    if counted:
                        gate.leave(entered, self._target_s(ctx))
                    else:
                        gate.release()
            return self._finish(request, name, response, status, rid, start)

        return endpoint

    def _check_budgets(self, ctx: Context, scope: asyncio.Timeout) -> None:
        """After a wait in the queue: refuse a request whose deadline no longer holds the budgets its
        route spends (the feature store's, for a model that reads features) - it would time out."""
        served = ctx.served
        if served is None or served.online is None:
            return
        when = scope.when()
        left = when - asyncio.get_running_loop().time() if when is not None else math.inf
        if left < self.settings.feature_timeout_ms / 1000:
            raise Rejected("deadline")

    def _target_s(self, ctx: Context | None) -> float:
        """The latency a request should stay under: the target, grown with its deadline (rows, client)."""
        target = self.settings.target_latency_s
        if ctx is None:
            return target
        return target * ctx.deadline_s / (self.settings.deadline_ms / 1000)

    def _deadline(self, request: Request) -> tuple[float, bool]:
        """The request's deadline in seconds, and whether the client set it (X-Deadline-Ms)."""
        raw = request.headers.get("x-deadline-ms")
        if raw is None:
            return self.settings.deadline_ms / 1000, False
        try:
            ms = float(raw)
        except ValueError:
            raise RequestError(
                f"header X-Deadline-Ms must be a number of milliseconds, got {raw!r}",
            ) from None
        if not 0 < ms <= 60_000:
            raise RequestError("header X-Deadline-Ms must be in (0, 60000]")
        return ms / 1000, True

    def _finish(
        self, request: Request, name: str, response: Response, status: int, rid: str, start: float
    ) -> Response:
        elapsed = time.perf_counter() - start
        self.metrics.count(name, status, elapsed)
        response.headers["x-request-id"] = rid
        if self.settings.access_log and access.isEnabledFor(logging.INFO):
            access.info(
                orjson.dumps(
                    {"request_id": rid, "method": request.method, "path": request.path, "status": status,
                     "ms": round(elapsed * 1000, 3)}
                ).decode()
            )  # fmt: skip
        return response


async def read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLargeError(f"request body of {length} bytes is over the {limit}-byte limit")
    ctype = request.headers.get("content-type", "")
    if ctype and not ctype.startswith("application/json"):
        raise UnsupportedMediaTypeError(f"content type must be application/json, got {ctype!r}")
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLargeError(f"request body is over the {limit}-byte limit")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc}") from None
