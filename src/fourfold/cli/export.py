"""``fourfold export``: an edge bundle of a model, verified by the gate before it is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fourfold.embedded.targets import FORMATS


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        uri: Annotated[str, typer.Argument(help="A path or models:/NAME/VERSION|ALIAS.")],
        out: Annotated[Path, typer.Option("--out", help="The bundle's directory (new, empty, or a bundle).")],
        fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")] = "onnx",
        quantize: Annotated[
            str | None,
            typer.Option(help="'dynamic': int8 weights, kept only if its parity holds and faster."),
        ] = None,
        opset: Annotated[int | None, typer.Option(help="Re-target the ONNX default domain's opset.")] = None,
        force: Annotated[
            bool, typer.Option(help="Write the bundle even if the gate fails (unverified).")
        ] = False,
        trusted: Annotated[bool, typer.Option(help="Allow loading a pickled model.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    ) -> None:
        """Export the model for in-process use: the model file(s), a manifest, the feature contract, the
        parity report and the vendorable runtime (fourfold_edge/), written only if the gate passes."""
        from fourfold.embedded.export import export_bundle

        report = export_bundle(uri, fmt, out, quantize=quantize, opset=opset, force=force, trusted=trusted)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
            return
        typer.echo(f"{report.out}  ({fmt}, {len(report.files)} files)")
        typer.echo(report.gate.summary())
        if report.gate.parity is not None:
            for group, g in report.gate.parity.groups.items():
                note = "" if g.gating else "  (informational)"
                typer.echo(
                    f"  {group:<17} rows {g.rows:>5}  max|diff| {g.max_abs_diff:.3g}  "
                    f"beyond {g.beyond_tolerance}  flips {g.label_flips}{note}"
                )
        q = report.quantization
        if q:
            verdict = "kept" if q.get("kept") else f"dropped: {q.get('why')}"
            typer.echo(f"quantization: {verdict}; {q.get('parity', '')}")
        if not report.verified:
            typer.secho("written UNVERIFIED (--force)", fg="yellow")
        typer.echo(
            f"use: from fourfold_edge import EdgeModel; EdgeModel({str(report.out)!r}).predict_one({{...}})"
        )

    @app.command("bench-embedded")
    def bench_embedded_(
        uri: Annotated[str, typer.Argument(help="A path or models:/NAME/VERSION|ALIAS.")],
        calls: Annotated[int, typer.Option(min=100, help="Calls per round.")] = 3000,
        rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds (the median is shown).")] = 3,
        trusted: Annotated[bool, typer.Option(help="Allow loading a pickled model.")] = False,
    ) -> None:
        """Single-row p50/p99 in-process: native, ONNX Runtime, compiled trees, the cascade's local path."""
        from fourfold.embedded.latency import bench_embedded

        rows = bench_embedded(uri, calls=calls, rounds=rounds, trusted=trusted)
        typer.echo(f"{'runtime':<24} {'p50 us':>9} {'p99 us':>9}")
        for r in rows:
            if r.p50_us is None or r.p99_us is None:
                typer.echo(f"{r.runtime:<24} {'-':>9} {'-':>9}  {r.note}")
            else:
                typer.echo(f"{r.runtime:<24} {r.p50_us:>9.2f} {r.p99_us:>9.2f}")
