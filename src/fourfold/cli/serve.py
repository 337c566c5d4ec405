"""``fourfold serve``: the online server for a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError

from fourfold.errors import InvalidOptionError, RequestError, UnavailableError
from fourfold.registry.resolve import resolve


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        uri: Annotated[str | None, typer.Argument(help="Model URI (default: FOURFOLD_MODEL).")] = None,
        store: Annotated[str | None, typer.Option(help="Online feature store URL.")] = None,
        features: Annotated[
            Path | None, typer.Option(help="features.yaml to use instead of the model package's.")
        ] = None,
        host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
        port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
        workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
        threads: Annotated[int | None, typer.Option(help="Model threads per worker.")] = None,
        config: Annotated[Path | None, typer.Option(help="A YAML file of settings.")] = None,
    ) -> None:
        """Serve a model over HTTP: /predict, /predict/batch, Open Inference Protocol, probes, /metrics."""
        from fourfold.extras import require

        for module in ("uvicorn", "orjson", "prometheus_client"):
            require(module, "serve", "fourfold serve")
        from fourfold.online.server import serve as run
        from fourfold.online.settings import ServeSettings

        overrides = {"model": uri, "store": store, "host": host, "port": port, "workers": workers,
                     "threads": threads, "features": features}  # fmt: skip
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            settings = ServeSettings.from_file(config, **given) if config else ServeSettings(**given)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise InvalidOptionError(_first_problem(exc)) from None
        except (OSError, yaml.YAMLError) as exc:
            raise RequestError(f"--config {config}: {exc}") from None
        # fail before saying "serving": a model that does not resolve, a port that cannot be listened on
        resolve(settings.model)
        _check_listen(settings.host, settings.port)
        typer.echo(
            f"serving {settings.model} on http://{settings.host}:{settings.port} "
            f"({settings.workers} worker(s) x {settings.threads} thread(s))",
            err=True,
        )
        run(settings)


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "settings"
    return f"--{field.replace('_', '-')}: {err['msg']} (got {err.get('input')!r})"


def _check_listen(host: str, port: int) -> None:
    """Refuse now, with the reason, a host and port this process cannot listen on (uvicorn would log it
    from the worker processes instead)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidOptionError(f"--host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise UnavailableError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
