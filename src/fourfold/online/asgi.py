"""A minimal ASGI layer: a router (exact paths from a dict, templated paths from regexes, the lifespan
protocol) and the request / response objects the handlers use.

Starlette's application adds two middleware layers and a route scan to every request; the server's hot
routes are a handful of fixed paths, so fourfold dispatches them itself. Measured on ``/predict``: about a
fifth of the per-request CPU. Its ``Request`` / ``Response`` (header views, mutable header lists, URL
objects, background tasks) were the next tenth; the handlers need a header lookup, the body and a status
with a few headers, which :class:`Request` and :class:`Response` give in a handful of lines.

    >>> router = Router(lifespan=None)
    >>> router.add("GET", "/v2/models/{model}", handler)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

__all__ = ["FixedResponse", "Request", "Response", "Router"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Request:
    """One HTTP request: ``method``, ``path``, ``path_params``, ``headers`` (lower-case names) and
    ``await body()``."""

    __slots__ = ("_headers", "_receive", "method", "path", "path_params", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.path_params: dict[str, str] = scope.get("path_params") or {}
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:  # names are lower-case in ASGI; a repeated header keeps its last value
            self._headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.scope["headers"]}
        return self._headers

    async def body(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("the client went away")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Response:
    """A complete response: status, headers (a plain dict, lower-case names) and body bytes."""

    __slots__ = ("body", "headers", "media_type", "status_code")

    def __init__(
        self, body: bytes, status_code: int = 200, headers: dict[str, str] | None = None,
        media_type: str = "application/json",
    ) -> None:  # fmt: skip
        self.body = body
        self.status_code = status_code
        self.headers = {k.lower(): v for k, v in headers.items()} if headers else {}
        self.media_type = media_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(b"content-type", self.media_type.encode()), (b"content-length", b"%d" % len(self.body))]
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status_code, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


class FixedResponse(Response):
    """A response sent again and again as it is (the overload refusal): its ASGI messages are built once.
    Never change its headers."""

    __slots__ = ("_messages",)

    def __init__(self, body: bytes, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(body, status_code, headers)
        raw = [(b"content-type", self.media_type.encode()), (b"content-length", b"%d" % len(body))]
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        self._messages = (
            {"type": "http.response.start", "status": status_code, "headers": raw},
            {"type": "http.response.body", "body": body},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start, body = self._messages
        await send(start)
        await send(body)


Endpoint = Callable[[Request], Awaitable[Response]]
Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]

_PARAM = re.compile(r"\{(\w+)\}")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"error": message}), status, headers, "application/json")


class Router:
    def __init__(self, lifespan: Lifespan | None) -> None:
        self.lifespan = lifespan
        self.exact: dict[str, dict[str, Endpoint]] = {}
        self.templated: list[tuple[re.Pattern[str], dict[str, Endpoint]]] = []
        self.state: dict[str, Any] = {}

    def add(self, method: str, path: str, endpoint: Endpoint) -> None:
        if "{" not in path:
            self.exact.setdefault(path, {})[method] = endpoint
            return
        regex = re.compile(_PARAM.sub(r"(?P<\1>[^/]+)", path))
        for pattern, methods in self.templated:
            if pattern.pattern == regex.pattern:
                methods[method] = endpoint
                return
        self.templated.append((regex, {method: endpoint}))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        methods = self.exact.get(path)
        if methods is None:
            for pattern, candidates in self.templated:
                match = pattern.fullmatch(path)
                if match is not None:
                    scope["path_params"] = match.groupdict()
                    methods = candidates
                    break
        if methods is None:
            response = _error(404, f"no route {path!r}")
        else:
            endpoint = methods.get(scope["method"])
            if endpoint is None:
                allow = ", ".join(sorted(methods))
                response = _error(405, f"{scope['method']} is not allowed on {path!r} (allowed: {allow})",
                                  {"Allow": allow})  # fmt: skip
            else:
                response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        if self.lifespan is None:
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        manager = self.lifespan(self)
        try:
            await manager.__aenter__()
        except BaseException as exc:
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            raise
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            await manager.__aexit__(None, None, None)
        finally:
            await send({"type": "lifespan.shutdown.complete"})
