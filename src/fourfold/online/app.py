"""The online server's routes: the seed's ``/predict`` with the feature fetch, ``/predict/batch``, the
Open Inference Protocol, probes, metrics and hot reload - one ASGI app (fourfold's router) around one
:class:`~fourfold.Predictor`. Every route goes through the guard of :class:`~fourfold.online.state.Server`.

    >>> # app = build_app(ServeSettings(model="models:/fraud/production"))
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000, loop="uvloop", http="httptools")
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fourfold import __version__
from fourfold.errors import (
    EntityNotFoundError,
    InputError,
    NotFoundError,
    PayloadTooLargeError,
    RowsRejectedError,
    UnknownFieldError,
)
from fourfold.features.stores import StoreError
from fourfold.online.asgi import Request, Response, Router
from fourfold.online.oip import OIPError, decode_infer, encode_infer, model_metadata
from fourfold.online.openapi import openapi
from fourfold.online.served import Served
from fourfold.online.settings import ServeSettings
from fourfold.online.state import Context, Server, json_response, read_json

__all__ = ["build_app"]


# -- /predict: the seed's endpoint ------------------------------------------------------------------------
async def _features_for(
    ctx: Context, served: Served, keys: list[str], now: int
) -> tuple[list[dict[str, float]], list[bool]]:
    """The features fourfold computes for each entity as of ``now`` (windows from the stored state,
    entity features), and whether the store knew the entity. The store's budget grows with the rows
    asked for; on a timeout or a store error the feature set's fallback rule decides (defaults and
    ``degraded``, or 503)."""
    online, server, fs = served.online, ctx.server, served.features
    assert online is not None
    assert fs is not None
    settings = server.settings
    budget = (settings.feature_timeout_ms + settings.feature_timeout_per_row_ms * len(keys)) / 1000
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(budget):
            rows = await online.aget(server.store, keys, at_ms=now)
    except (TimeoutError, StoreError) as exc:
        reason = "timeout" if isinstance(exc, TimeoutError) else "store_error"
        defaults = fs.fallback(list(served.assembly.computed), reason)  # 503 when not acceptable
        server.metrics.degraded.labels(reason).inc()
        ctx.degraded = True
        return [defaults] * len(keys), [False] * len(keys)
    finally:
        server.metrics.feature_fetch.observe(time.perf_counter() - t0)
    found = [row is not None for row in rows]
    if not all(found):
        unknown = [k for k, f in zip(keys, found, strict=True) if not f]
        server.metrics.unknown_entity.inc(len(unknown))
        if fs.unknown_entity == "reject":
            shown = ", ".join(repr(k) for k in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise EntityNotFoundError(
                f"the online store has no {online.key_column} {shown}; feature set {fs.name!r} refuses "
                "unknown entities (unknown_entity: reject)"
            )
        empty = online.empty(now)
        rows = [row if row is not None else empty for row in rows]
    return rows, found  # type: ignore[return-value]


async def predict(request: Request, ctx: Context) -> Response:
    body = await read_json(request, ctx.server.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object of the entity id and the request's fields")
    served = ctx.model()
    assembly = served.assembly
    assembly.check_fields(body.keys())
    extra: dict[str, Any] = {}
    if served.online is not None:
        key = assembly.key_of(body)
        fetched, found = await _features_for(ctx, served, [key], ctx.server.clock())
        row = assembly.row(body, fetched[0])
        extra["entity_found"] = found[0]
    else:
        row = assembly.row(body)
    p = served.predictor
    x = p.check_one(row)
    server = ctx.server
    out = server.cache.get(served.version, x)
    (server.metrics.cache_hit if out is not None else server.metrics.cache_miss).inc()
    if out is None and server.shared is not None:
        out = await _shared_get(server, served, x)
    if out is None:
        scored = await served.batcher.submit(x)
        out = {k: v[0].item() for k, v in scored.items()}
        server.cache.put(served.version, x, out)
        if server.shared is not None:
            _shared_put(server, served, x, out)
    if served.decision:  # the package's threshold is a decision rule: say what it decided
        out = {**out, "decision": "positive" if out.get("label") else "negative"}
    return json_response(
        {**out, "model_version": served.version, "request_id": ctx.request_id, "degraded": ctx.degraded,
         **extra}
    )  # fmt: skip


async def _shared_get(server: Server, served: Served, x: np.ndarray) -> dict[str, Any] | None:
    assert server.shared is not None
    try:
        out = await server.shared.get(served.name, served.version, x)
    except (OSError, ConnectionError, ValueError):
        server.metrics.cache.labels("shared_error").inc()
        return None
    server.metrics.cache.labels("shared_hit" if out is not None else "shared_miss").inc()
    if out is not None:
        server.cache.put(served.version, x, out)
    return out


def _shared_put(server: Server, served: Served, x: np.ndarray, out: dict[str, Any]) -> None:
    assert server.shared is not None

    async def put() -> None:  # the response does not wait for the shared cache
        try:
            await server.shared.put(served.name, served.version, x, out)  # type: ignore[union-attr]
        except (OSError, ConnectionError):
            server.metrics.cache.labels("shared_error").inc()

    task = asyncio.get_running_loop().create_task(put())
    server.background.add(task)
    task.add_done_callback(server.background.discard)


async def predict_batch(request: Request, ctx: Context) -> Response:
    body = await read_json(request, ctx.server.settings.max_body_bytes)
    rows = body.get("rows") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError('the request body must be {"rows": [{...}, ...]}, a JSON object of row objects')
    if isinstance(body, dict) and len(body) > 1:
        extra_keys = sorted(k for k in body if k != "rows")
        raise UnknownFieldError(extra_keys, ["rows"], where="the request body")
    limit = ctx.server.settings.max_batch_rows
    if len(rows) > limit:
        raise PayloadTooLargeError(f"{len(rows)} rows is over the {limit}-row limit")
    ctx.allow_rows(len(rows))
    served = ctx.model()
    assembly = served.assembly
    for i, r in enumerate(rows):
        assembly.check_fields(r.keys(), where=f"rows[{i}]")
    p = served.predictor
    found: list[bool] | None = None
    if served.online is not None and rows:
        keys = [assembly.key_of(r, where=f"rows[{i}]") for i, r in enumerate(rows)]
        fetched, found = await _features_for(ctx, served, keys, ctx.server.clock())
        model_rows = [assembly.row(r, f) for r, f in zip(rows, fetched, strict=True)]
    else:
        model_rows = [assembly.row(r) for r in rows]
    checked = p.check(model_rows)
    if checked.rejected:
        bad = checked.rejections()
        first, reason = bad[0]
        more = f" ({len(bad)} of {len(rows)} rows rejected)" if len(bad) > 1 else ""
        raise RowsRejectedError(f"rows[{first}]: {reason}{more}", [{"row": i, "reason": r} for i, r in bad])
    out = p.score(checked.x)
    ctx.server.metrics.batch_rows.observe(len(rows))
    preds = [{k: v[i].item() for k, v in out.items()} for i in range(len(rows))]
    if found is not None:
        for pred, f in zip(preds, found, strict=True):
            pred["entity_found"] = f
    return json_response({"predictions": preds, "model_version": served.version, "request_id": ctx.request_id,
                  "degraded": ctx.degraded})  # fmt: skip


# -- Open Inference Protocol ------------------------------------------------------------------------------
def _model_for(ctx: Context, request: Request) -> Served:
    served = ctx.model()
    name = request.path_params.get("model")
    version = request.path_params.get("version")
    if name != served.name:
        raise NotFoundError(f"no model named {name!r} is served here (serving {served.name!r})")
    if version is not None and version != served.version:
        raise NotFoundError(
            f"model {name!r} version {version!r} is not served here (serving version {served.version})",
        )
    return served


async def infer(request: Request, ctx: Context) -> Response:
    body = await read_json(request, ctx.server.settings.max_body_bytes)
    served = _model_for(ctx, request)
    p = served.predictor
    req = decode_infer(body, p.signature)
    limit = ctx.server.settings.max_batch_rows
    if req.rows > limit:
        raise PayloadTooLargeError(f"{req.rows} rows is over the {limit}-row limit")
    ctx.allow_rows(req.rows)
    try:
        checked = p.check(req.batch)
    except InputError as exc:
        raise OIPError(exc.message) from None
    if checked.rejected:
        first, reason = checked.rejections()[0]
        more = f" ({checked.rejected} of {checked.rows} rows rejected)" if checked.rejected > 1 else ""
        raise OIPError(f"row {first}: {reason}{more}")
    x = checked.x
    out = await served.batcher.submit(x) if len(x) == 1 else p.score(x)
    return json_response(encode_infer(served.name, served.version, out, req))


async def model_meta(request: Request, ctx: Context) -> Response:
    served = _model_for(ctx, request)
    return json_response(
        model_metadata(
            served.name, served.version, served.predictor.package.flavor, served.predictor.signature
        )
    )


async def model_ready(request: Request, ctx: Context) -> Response:
    _model_for(ctx, request)
    return json_response({"name": request.path_params["model"], "ready": ctx.server.ready})


async def server_meta(request: Request, ctx: Context) -> Response:
    return json_response({"name": "fourfold", "version": __version__, "extensions": []})


async def live(request: Request, ctx: Context) -> Response:
    return json_response({"live": True})


async def ready(request: Request, ctx: Context) -> Response:
    if not ctx.server.ready or ctx.served is None:
        return json_response({"ready": False, "error": "model not loaded"}, 503)
    return json_response({"ready": True})


async def metrics(request: Request, ctx: Context) -> Response:
    m = ctx.server.metrics
    return Response(m.render(), 200, media_type="text/plain; version=0.0.4")


async def openapi_doc(request: Request, ctx: Context) -> Response:
    # the standard library's encoder: the document's bounds are exact integers beyond 64 bits
    doc = json.dumps(openapi(ctx.model(), __version__, ctx.server.settings)).encode()
    return Response(doc, 200)


async def reload(request: Request, ctx: Context) -> Response:
    changed = await asyncio.to_thread(ctx.server.load)
    served = ctx.server.holder.current
    assert served is not None
    return json_response({"changed": changed, "model": served.name, "model_version": served.version})


def build_app(
    settings: ServeSettings,
    *,
    clock: Callable[[], int] | None = None,
    monotonic: Callable[[], float] | None = None,
) -> Router:
    """The ASGI app for ``settings`` (the model is loaded and warmed at startup, before ready); ``clock``
    (epoch ms) is the time the stored windows are read as of - the wall clock unless given; ``monotonic``
    (seconds) the admission's clock - ``time.monotonic`` unless given."""
    s = Server(settings, clock, monotonic)
    r = s.route
    app = Router(lifespan=s.lifespan)
    app.add("POST", "/predict", r("predict", predict))
    app.add("POST", "/predict/batch", r("predict_batch", predict_batch))
    app.add("GET", "/v2", r("server_metadata", server_meta))
    app.add("GET", "/v2/health/live", r("live", live, probe=True))
    app.add("GET", "/v2/health/ready", r("ready", ready, probe=True))
    app.add("GET", "/healthz", r("live", live, probe=True))
    app.add("GET", "/readyz", r("ready", ready, probe=True))
    app.add("GET", "/metrics", r("metrics", metrics, probe=True))
    app.add("POST", "/admin/reload", r("reload", reload))
    app.add("GET", "/openapi.json", r("openapi", openapi_doc, probe=True))
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.add("GET", prefix, r("model_metadata", model_meta))
        app.add("GET", prefix + "/ready", r("model_ready", model_ready))
        app.add("POST", prefix + "/infer", r("infer", infer))
    app.state["server"] = s
    app.state["admission"] = s.admission  # asked by the HTTP protocol before a request is made
    return app
