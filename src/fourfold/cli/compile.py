"""``fourfold compile``: add a parity-checked ONNX runtime (and, with ``--c``, a compiled C library of
a tree ensemble) to a model package."""

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
        c: Annotated[
            bool,
            typer.Option("--c", help="Also compile a tree ensemble to a C library (needs a C compiler)."),
        ] = False,
    ) -> None:
        """Convert to ONNX, check it, prove parity with the native model, store both in the package."""
        report = compile_model(uri, force=force, trusted=trusted, c=c)
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
        if c:
            _echo_c(uri)


def _echo_c(uri: str) -> None:
    from fourfold import resolve

    pkg = resolve(uri)
    info = pkg.runtimes["c"]
    parity = info["parity"]
    verdict = "verified" if info["verified"] else "UNVERIFIED (--force)"
    typer.echo(
        f"c: {verdict}: max|diff| {parity['max_abs_diff']:.3g} over {parity['rows']} rows, "
        f"{parity['label_flips']} label flip(s); {info['translation_units']} translation units, "
        f"{info['compiler']['version']}"
    )
    typer.echo(f"serving runtime: {pkg.serving_runtime()}")
