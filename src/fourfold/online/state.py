"""The online server's state and the guard every route goes through.

:class:`Server` is what lives as long as the process - the model holder, the store, the caches, the
metrics, the clock, the lifecycle (load, warm, reload polling, metric flushing) - and its
:meth:`Server.route` wraps each handler in the guard: load shedding (503 + Retry-After), bearer auth,
the deadline (504; it grows with the rows of a batch request), errors as ``{"error": ...}`` with their
status (never a traceback), metrics and one JSON access-log line with the request id. A handler gets
one request's :class:`Context`; :func:`read_json` reads a JSON body within the limit.

    >>> # server = Server(settings); endpoint = server.route("predict", predict)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import itertools
import logging
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
from fourfold.online.asgi import Request, Response
from fourfold.online.cache import PredictionCache, SharedCache
from fourfold.online.metrics import Metrics
from fourfold.online.served import ModelHolder, Served
from fourfold.online.settings import ServeSettings
from fourfold.settings import Settings

__all__ = ["Context", "Handler", "Server", "json_response", "read_json"]

log = logging.getLogger("fourfold.online")
access = logging.getLogger("fourfold.access")
Handler = Callable[[Request, "Context"], Awaitable[Response]]


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
    def __init__(self, settings: ServeSettings, clock: Callable[[], int] | None = None) -> None:
        self.settings = settings
        #: "now" in epoch ms, the time windows are read as of (injectable: tests, replays)
        self.clock: Callable[[], int] = clock or now_ms
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
        while True:
            await asyncio.sleep(0.05)  # small flushes: no pause a request would notice
            self.metrics.flush()

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
        async def endpoint(request: Request) -> Response:
            start = time.perf_counter()
            rid = request.headers.get("x-request-id") or f"{self._rid_prefix}{next(self._rids):08x}"
            status = 500
            if not probe and self.inflight >= self.settings.max_inflight:
                self.metrics.shed.inc()
                response = json_response(
                    {"error": "server overloaded, retry later"}, 503, {"Retry-After": "1"}
                )
                status = 503
                return self._finish(request, name, response, status, rid, start)
            self.inflight += 1
            served = self.holder.current
            if served is not None:
                served.batcher.expected = self.inflight
            try:
                if not probe and self.token is not None:
                    auth = request.headers.get("authorization", "")
                    if not hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
                        raise UnauthorizedError("missing or wrong bearer token")
                deadline, by_client = self._deadline(request)
                ctx = Context(self, rid, deadline)
                async with asyncio.timeout(deadline) as scope:
                    ctx._scope = None if by_client else scope
                    response = await handler(request, ctx)
                status = response.status_code
            except TimeoutError:
                status = 504
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
                self.inflight -= 1
                if served is not None:
                    served.batcher.expected = self.inflight
            return self._finish(request, name, response, status, rid, start)

        return endpoint

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
