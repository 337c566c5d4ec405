"""The HTTP floor: a minimal Starlette endpoint that reads the body and returns a constant."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def constant(request: Request) -> Response:
    await request.body()
    return Response(b'{"score":0.5}', media_type="application/json")


app = Starlette(routes=[Route("/infer", constant, methods=["POST"])])
