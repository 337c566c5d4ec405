"""``fourfold batch``: score a table (parquet / CSV files, a directory or a glob) into a partition."""

from __future__ import annotations

import sys
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("batch")
    def batch(
        uri: Annotated[str, typer.Argument(help="Model URI, e.g. models:/fraud/production.")],
        input: Annotated[str, typer.Option("--input", "-i", help="Parquet/CSV file, directory or glob.")],
        output: Annotated[str, typer.Option("--output", "-o", help="Output directory (may use {key}).")],
        id_cols: Annotated[str, typer.Option(help="Comma-separated id columns copied to the output.")] = "",
        partition: Annotated[str | None, typer.Option(help="e.g. date=2025-04-15")] = None,
        workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
        batch_rows: Annotated[int, typer.Option(help="Rows per record batch.", min=1)] = 65_536,
        resume: Annotated[bool, typer.Option(help="Skip the fragments a killed run finished.")] = False,
        max_rejected: Annotated[
            float | None,
            typer.Option(help="Fail (commit nothing) above this many bad rows (< 1: a fraction)."),
        ] = None,
        runtime: Annotated[str, typer.Option(help="auto (fastest verified), native or onnx.")] = "auto",
    ) -> None:
        """Score INPUT with the model; commit the results atomically to OUTPUT (exit 3: too many bad rows)."""
        from fourfold.batch import JobFailed, run_batch

        try:
            summary = run_batch(
                model=uri, input=input, output=output, partition=partition, workers=workers,
                batch_rows=batch_rows, resume=resume, max_rejected=max_rejected, runtime=runtime,
                id_cols=tuple(c for c in id_cols.split(",") if c),
            )  # fmt: skip
        except JobFailed as exc:
            typer.secho(f"error: {exc.message}", fg="red", err=True)
            sys.exit(3)
        typer.echo(summary.render())
