"""``fourfold cascade calibrate``: pick the Embedded + Online cascade's band from a labelled sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    cascade = typer.Typer(help="The Embedded + Online cascade.", no_args_is_help=True)
    app.add_typer(cascade, name="cascade")

    @cascade.command("calibrate")
    def calibrate_(
        bundle: Annotated[Path, typer.Argument(help="The edge bundle (fourfold export).")],
        data: Annotated[Path, typer.Option(help="Labelled rows: parquet or CSV with the features + label.")],
        label: Annotated[str, typer.Option(help="The column with the true label (0/1).")] = "label",
        server_model: Annotated[
            str | None, typer.Option(help="The model the server serves (default: the bundle's source).")
        ] = None,
        target_share: Annotated[float, typer.Option(help="At most this share of rows to the server.")] = 0.2,
        max_loss: Annotated[float, typer.Option(help="At most this much accuracy lost.")] = 0.005,
        plot: Annotated[Path | None, typer.Option(help="Write the trade-off plot as a PNG here.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Choose low/high so that at most --target-share of rows go to the server, losing the least
        accuracy (at most --max-loss); prints the trade-off table. Exit 1 when the bound cannot be met."""
        from fourfold.embedded.calibration_job import run_calibration

        cal = run_calibration(bundle, data, label=label, server_model=server_model,
                              target_share=target_share, max_loss=max_loss, plot_to=plot)  # fmt: skip
        if as_json:
            typer.echo(json.dumps(cal.to_dict(), indent=2))
        else:
            typer.echo(f"server for every row: accuracy {cal.server_accuracy:.4f}; "
                       f"edge alone: {cal.local_accuracy:.4f}")  # fmt: skip
            typer.echo(f"{'share<=':>8} {'low':>10} {'high':>10} {'share':>7} {'accuracy':>9} {'lost':>8}")
            for t, b in zip(_shares(), cal.table, strict=True):
                typer.echo(f"{t:>8.0%} {b.low:>10.4g} {b.high:>10.4g} {b.share:>7.1%} {b.accuracy:>9.4f} "
                           f"{b.loss:>+8.4f}")  # fmt: skip
            typer.echo(("pick: " if cal.ok else "FAILED: ") + cal.message)
            if plot is not None:
                typer.echo(f"plot: {plot}")
        if not cal.ok:
            raise typer.Exit(1)


def _shares() -> tuple[float, ...]:
    from fourfold.embedded.calibrate import SHARES

    return SHARES
