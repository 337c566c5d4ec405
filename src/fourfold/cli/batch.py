"""``fourfold batch``: score a table (files, a SQL query) into a partition, a PostgreSQL table or the
online feature store - once, or on a cron schedule with ``--every``."""

from __future__ import annotations

import sys
from typing import Annotated, Any, NoReturn

import typer


def register(app: typer.Typer) -> None:
    @app.command("batch")
    def batch(
        uri: Annotated[str, typer.Argument(help="Model URI, e.g. models:/fraud/production.")],
        input: Annotated[
            str,
            typer.Option(
                "--input",
                "-i",
                help="Parquet/CSV file, directory or glob (local, s3://, gs://, ...), or postgresql:// / "
                "duckdb:// with --query.",
            ),
        ],
        output: Annotated[
            str,
            typer.Option(
                "--output",
                "-o",
                help="Output directory (may use {key} from --partition), postgresql://... with --table, "
                "or a feature store URL (redis://, sqlite:///).",
            ),
        ],
        id_cols: Annotated[str, typer.Option(help="Comma-separated id columns copied to the output.")] = "",
        partition: Annotated[
            str | None, typer.Option(help="e.g. date=2025-04-15; with --every: date={yesterday}.")
        ] = None,
        query: Annotated[str | None, typer.Option(help="SQL for a postgresql:// or duckdb:// input.")] = None,
        table: Annotated[
            str | None, typer.Option(help="Table (PostgreSQL output) or namespace (feature store output).")
        ] = None,
        engine: Annotated[str, typer.Option(help="local or spark.")] = "local",
        spark_master: Annotated[
            str | None, typer.Option(help="Spark master URL (--engine spark; default local[*]).")
        ] = None,
        workers: Annotated[
            int, typer.Option(help="Worker processes (1: one process, the model on every core).", min=1)
        ] = 1,
        threads: Annotated[
            int | None, typer.Option(help="Model threads per process (default: cores / workers).", min=1)
        ] = None,
        batch_rows: Annotated[int, typer.Option(help="Rows per record batch.", min=1)] = 65_536,
        resume: Annotated[bool, typer.Option(help="Skip the fragments a killed run finished.")] = False,
        overwrite: Annotated[
            bool,
            typer.Option(
                help="Replace a non-empty output directory fourfold did not write (never one holding an "
                "input)."
            ),
        ] = False,
        max_rejected: Annotated[
            float | None,
            typer.Option(help="Fail (commit nothing) above this many bad rows (< 1: a fraction)."),
        ] = None,
        quarantine: Annotated[
            str | None, typer.Option(help="Where rejected rows go for a database or store output.")
        ] = None,
        features: Annotated[
            str | None, typer.Option(help="features.yaml to use instead of the model package's.")
        ] = None,
        events: Annotated[
            str | None, typer.Option(help="Event log to compute the model's windowed features from.")
        ] = None,
        timestamp: Annotated[
            str | None, typer.Option(help="The rows' as-of column for windowed features.")
        ] = None,
        as_of: Annotated[
            str | None, typer.Option(help="One as-of time (ISO 8601) for every row's windowed features.")
        ] = None,
        runtime: Annotated[
            str, typer.Option(help="auto (the runtime the package was compiled for), native, onnx or c.")
        ] = "auto",
        every: Annotated[
            str | None, typer.Option(help='Run on a cron schedule in this process, e.g. "0 2 * * *".')
        ] = None,
        progress: Annotated[
            bool | None, typer.Option(help="Progress line on stderr (default: when it is a terminal).")
        ] = None,
    ) -> None:
        """Score INPUT with the model; commit the results atomically to OUTPUT.

        Exit codes: 0 committed, 3 too many rejected rows (nothing committed), 2 a malformed option,
        1 any other error (nothing committed)."""
        from datetime import UTC, datetime

        from fourfold.batch import BatchOptions, JobFailed, run_batch
        from fourfold.batch.job import bound_memory
        from fourfold.batch.schedule import render_partition
        from fourfold.errors import FourfoldError, InvalidOptionError

        bound_memory()
        kwargs: dict[str, Any] = {
            "model": uri, "input": input, "output": output, "workers": workers, "threads": threads,
            "batch_rows": batch_rows, "resume": resume, "overwrite": overwrite, "max_rejected": max_rejected,
            "runtime": runtime, "id_cols": tuple(c for c in id_cols.split(",") if c), "query": query,
            "table": table, "engine": engine, "spark_master": spark_master, "quarantine": quarantine,
            "features": features, "events": events, "timestamp": timestamp, "as_of": as_of,
            "progress": progress,
        }  # fmt: skip

        def fail(exc: FourfoldError) -> NoReturn:
            typer.secho(f"error: {exc.message}", fg="red", err=True)
            sys.exit(3 if isinstance(exc, JobFailed) else 2 if isinstance(exc, InvalidOptionError) else 1)

        try:  # every option is checked now, before the first run (and before --every waits for it)
            options = BatchOptions(**kwargs, partition=render_partition(partition, datetime.now(UTC)))
        except FourfoldError as exc:
            fail(exc)
        if every:
            from fourfold.batch.schedule import run_every, stop_on_signals

            def one(when: datetime) -> None:
                summary = run_batch(options, partition=render_partition(partition, when))
                typer.echo(summary.render())

            run_every(every, one, stop=stop_on_signals())
            return
        try:
            summary = run_batch(options)
        except FourfoldError as exc:
            fail(exc)
        typer.echo(summary.render())
