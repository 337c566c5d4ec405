"""The ``fourfold`` command line: one CLI for every pattern.

$ fourfold models list
$ fourfold compile models:/fraud/production
$ fourfold demo
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from typing import Annotated

import typer

from fourfold.cli import (
    advise,
    batch,
    cascade,
    compile,
    demo,
    deploy,
    export,
    features,
    models,
    serve,
    stream,
)
from fourfold.errors import FourfoldError

app = typer.Typer(
    name="fourfold",
    help="Serve one trained model online, in batch, on streams and embedded.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class RegistryChoice(StrEnum):
    auto = "auto"
    local = "local"
    mlflow = "mlflow"


@app.callback()
def _options(
    registry: Annotated[
        RegistryChoice | None,
        typer.Option(
            "--registry",
            help="Where models:/ URIs resolve: local, mlflow, or auto "
            "(MLflow when MLFLOW_TRACKING_URI is set).",
            envvar="FOURFOLD_REGISTRY",
        ),
    ] = None,
) -> None:
    if registry is not None:
        os.environ["FOURFOLD_REGISTRY"] = registry.value


models.register(app)
compile.register(app)
demo.register(app)
advise.register(app)
features.register(app)
serve.register(app)
batch.register(app)
stream.register(app)
export.register(app)
cascade.register(app)
deploy.register(app)


def main() -> None:
    """Console entry point: fourfold errors print their message (no traceback) and exit 1; usage errors
    exit 2 (typer's standalone mode handles those)."""
    try:
        app()
    except FourfoldError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
