"""Running the online server: uvicorn with uvloop and httptools (fourfold's protocol: admission refuses
a request before uvicorn makes one of it), worker processes sharing the port, native thread pools sized
on purpose, graceful drain on SIGTERM.

    $ fourfold serve models:/fraud/production --workers 2 --port 8000
"""

from __future__ import annotations

import logging
import os
import sys

from fourfold.online.app import build_app
from fourfold.online.asgi import Router
from fourfold.online.settings import ServeSettings

__all__ = ["app_from_env", "serve"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def app_from_env() -> Router:
    """The app factory each worker process calls (settings travel in ``FOURFOLD_*`` variables)."""
    settings = ServeSettings()
    _logging(settings)
    return build_app(settings)


def _logging(settings: ServeSettings) -> None:
    access = logging.getLogger("fourfold.access")
    if settings.access_log and not access.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False


def serve(settings: ServeSettings) -> None:
    import uvicorn

    # threads x workers must not oversubscribe the cores: OpenMP (XGBoost, LightGBM) and BLAS pools get
    # `threads` each, ONNX Runtime's intra-op pool too (set by the predictor)
    for var in _THREAD_VARS:
        os.environ[var] = str(settings.threads)
    for name, value in settings.model_dump(exclude_none=True).items():
        if name in ("token",):
            continue  # secrets stay out of the environment; workers read token_file or FOURFOLD_TOKEN
        os.environ[f"FOURFOLD_{name.upper()}"] = str(value)
    if settings.token is not None:
        os.environ["FOURFOLD_TOKEN"] = settings.token.get_secret_value()
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        # each worker writes its metrics here; a scrape of any worker sums them (set before they import)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fourfold-metrics-")
    uvicorn.run(
        "fourfold.online.server:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="fourfold.online.protocol:AdmissionProtocol",
        # no limit_concurrency: uvicorn counts open connections against it, and a keep-alive client
        # holds one while idle; admission limits the requests in flight instead
        access_log=False,
        log_level="warning",
        # no X-Forwarded-* rewriting (a per-request middleware hop; fourfold logs request ids, not client
        # addresses) and no "server: uvicorn" banner
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        lifespan="on",
    )
