"""``fourfold compile``: add a parity-checked ONNX runtime to a model package."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fourfold import compile_model


def register(app: typer.Typer) -> None:
    @app.command("compile")
    def compile_(
        uri: Annotated[str, typer.Argument(help="A path or models:/NAME/VERSION|ALIAS.")],
        force: Annotated[bool, typer.Option(help="Store the ONNX model even if parity fails.")] = False,
        trusted: Annotated[bool, typer.Option(help="Allow loading a pickled model.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the parity report as JSON.")] = False,
    ) -> None:
        """Convert to ONNX, check it, prove parity with the native model, store both in the package."""
        report = compile_model(uri, force=force, trusted=trusted)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
            return
        typer.echo(report.summary())
        for group, g in report.groups.items():
            note = "" if g.gating else "  (informational)"
            typer.echo(
                f"  {group:<17} rows {g.rows:>5}  max|diff| {g.max_abs_diff:.3g}  "
                f"beyond {g.beyond_tolerance}  flips {g.label_flips}{note}"
            )
        if not report.passed:
            typer.secho("stored UNVERIFIED (--force): the predictor keeps the native runtime", fg="yellow")
