"""``fourfold demo``: generate the card-transaction log, train, package, compile, register, measure, and
write the users' window state to the online store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        events: Annotated[
            int, typer.Option(help="Number of transactions to generate.", min=20_000)
        ] = 1_000_000,
        seed: Annotated[int, typer.Option(help="Random seed (same seed, same data and model).")] = 0,
        out: Annotated[Path, typer.Option(help="Where to write the log and the model package.")] = Path(
            "demo-output"
        ),
        all_patterns: Annotated[
            bool,
            typer.Option(
                "--all",
                help="Then serve the model online, in batch, on a stream and embedded "
                "(needs fourfold[serve,stream]) and compare the same five events' scores.",
            ),
        ] = False,
    ) -> None:
        """Run the fraud demo end to end and print a short report."""
        from fourfold.demo.run import run_demo
        from fourfold.settings import Settings

        typer.echo(
            f"generating {events:,} card transactions, training, compiling, materializing ...", err=True
        )
        report = run_demo(events=events, seed=seed, out_dir=out)
        typer.echo(report.render())
        if all_patterns:
            from fourfold.demo.four import run_four

            typer.echo("serving the same model online, in batch, on a stream and embedded ...", err=True)
            four = run_four(report.uri, report.log_path, Settings().store_url, out)
            typer.echo(four.render())
            if not four.identical:
                raise typer.Exit(1)
