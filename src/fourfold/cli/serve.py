"""``fourfold serve``: the online server for a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


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
        from fourfold.model.flavors.base import require

        for module in ("uvicorn", "orjson", "prometheus_client"):
            require(module, "serve", "fourfold serve")
        from fourfold.online.server import serve as run
        from fourfold.online.settings import ServeSettings

        overrides = {"model": uri, "store": store, "host": host, "port": port, "workers": workers,
                     "threads": threads, "features": features}  # fmt: skip
        given = {k: v for k, v in overrides.items() if v is not None}
        settings = ServeSettings.from_file(config, **given) if config else ServeSettings(**given)  # type: ignore[arg-type]
        typer.echo(
            f"serving {settings.model} on http://{settings.host}:{settings.port} "
            f"({settings.workers} worker(s) x {settings.threads} thread(s))",
            err=True,
        )
        run(settings)
