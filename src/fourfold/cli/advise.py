"""``fourfold advise``: which serving pattern fits, asked as the source's decision tree.

The on-device question is asked first. Answers not given as flags are asked interactively; when
stdin is not a terminal the command exits with code 2 and names the flag to pass instead, except for
``--on-device``, which then defaults to no so that existing scripts keep working.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Annotated, Any, NoReturn

import typer

from fourfold.advise import (
    QUESTIONS,
    Advice,
    Answers,
    MissingAnswerError,
    advise,
    check_latency,
    measure_latency,
)

FLAGS: dict[str, str] = {
    "data_must_stay_on_device": "--on-device/--no-on-device",
    "human_waiting": "--human-waiting/--no-human-waiting",
    "sla_ms": "--sla-ms",
    "can_precompute": "--can-precompute/--no-can-precompute",
    "features_time_sensitive": "--time-sensitive/--no-time-sensitive",
}


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _fail(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=2)


def _check_interactive(field: str) -> None:
    if not _interactive():
        _fail(f"missing answer to {QUESTIONS[field]!r}; pass {FLAGS[field]} (stdin is not interactive)")


def _ask_yes_no(field: str) -> bool:
    """Ask the question behind ``field`` (prompts go to stderr, keeping --json output clean)."""
    _check_interactive(field)
    return typer.confirm(QUESTIONS[field], err=True)


def _ask_sla() -> float:
    _check_interactive("sla_ms")
    while True:
        sla = float(typer.prompt(QUESTIONS["sla_ms"], type=float, err=True))
        if math.isfinite(sla) and sla > 0:
            return sla
        typer.echo("Error: the SLA must be a number of milliseconds > 0.", err=True)


def _advice_dict(advice: Advice) -> dict[str, Any]:
    return {
        "pattern": advice.pattern,
        "reason": advice.reason,
        "path": list(advice.path),
        "hybrids": [dataclasses.asdict(h) for h in advice.hybrids],
    }


def _print_text(advice: Advice, warnings: list[str], latency: dict[str, Any] | None) -> None:
    typer.echo(f"Recommended pattern: {advice.pattern}")
    typer.echo(f"Reason: {advice.reason}")
    typer.echo("Path walked:")
    for i, step in enumerate(advice.path, 1):
        typer.echo(f"  {i}. {step}")
    typer.echo("Hybrids:" if advice.hybrids else "Hybrids: none")
    for hybrid in advice.hybrids:
        typer.echo(f"  - {hybrid.name}: {hybrid.reason}")
    if latency is not None:
        typer.echo(f"Latency of {latency['model']} (runtime {latency['runtime']}):")
        p50, p99 = latency["single_row_p50_ms"], latency["single_row_p99_ms"]
        typer.echo(f"  single row: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        typer.echo(
            f"  batch: {latency['batch_rows']} rows in {latency['batch_ms']:.1f} ms "
            f"({latency['batch_rows_per_s']:,.0f} rows/s)"
        )
    if warnings:
        typer.echo("Warnings:")
    for warning in warnings:
        typer.echo(f"  - {warning}")


def advise_command(
    human_waiting: Annotated[
        bool | None, typer.Option("--human-waiting/--no-human-waiting", help=QUESTIONS["human_waiting"])
    ] = None,
    sla_ms: Annotated[
        float | None, typer.Option("--sla-ms", help="The latency SLA in milliseconds (> 0).")
    ] = None,
    can_precompute: Annotated[
        bool | None, typer.Option("--can-precompute/--no-can-precompute", help=QUESTIONS["can_precompute"])
    ] = None,
    time_sensitive: Annotated[
        bool | None,
        typer.Option("--time-sensitive/--no-time-sensitive", help=QUESTIONS["features_time_sensitive"]),
    ] = None,
    on_device: Annotated[
        bool | None,
        typer.Option(
            "--on-device/--no-on-device",
            help=f"{QUESTIONS['data_must_stay_on_device']} Asked on a terminal; no when stdin is not one.",
        ),
    ] = None,
    entity_features: Annotated[
        bool,
        typer.Option(
            "--entity-features/--no-entity-features",
            help="Entity features (e.g. user embeddings) can be pre-computed in batch.",
        ),
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", metavar="URI", help="Measure this model's latency too.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the advice as JSON.")] = False,
) -> None:
    """Recommend a serving pattern (online, batch, streaming, embedded) and the hybrids that apply."""
    if on_device is None:
        # scripts written before the question was asked got "no"; they still do
        on_device = _ask_yes_no("data_must_stay_on_device") if _interactive() else False
    try:
        answers = Answers(
            human_waiting=_ask_yes_no("human_waiting") if human_waiting is None else human_waiting,
            sla_ms=sla_ms,
            can_precompute=can_precompute,
            features_time_sensitive=time_sensitive,
            data_must_stay_on_device=on_device,
            has_precomputable_entity_features=entity_features,
        )
    except ValueError as exc:
        _fail(f"invalid value for --sla-ms: {exc}")
    while True:
        try:
            advice = advise(answers)
            break
        except MissingAnswerError as exc:
            if exc.field == "sla_ms":
                answers = dataclasses.replace(answers, sla_ms=_ask_sla())
            else:
                answers = dataclasses.replace(answers, **{exc.field: _ask_yes_no(exc.field)})
    warnings = list(advice.warnings)
    latency: dict[str, Any] | None = None
    if model is not None:
        from fourfold import load_predictor

        predictor = load_predictor(model)
        stored = predictor.package.sample()  # real rows beat random ones for tree models
        sample = None
        if stored is not None and stored.num_rows:
            sample = {
                c: stored[c].to_numpy(zero_copy_only=False).tolist()
                for c in predictor.signature.feature_names
            }
        report = measure_latency(predictor, sample=sample)
        warnings.extend(check_latency(advice, report, answers.sla_ms))
        latency = {"model": model, "runtime": str(predictor.runtime), **dataclasses.asdict(report)}
    if as_json:
        payload = {**_advice_dict(advice), "warnings": warnings, "answers": dataclasses.asdict(answers)}
        if latency is not None:
            payload["latency"] = latency
        typer.echo(json.dumps(payload, indent=2))
    else:
        _print_text(advice, warnings, latency)


def register(app: typer.Typer) -> None:
    """Add the ``advise`` command to ``app``.

    >>> app = typer.Typer()
    >>> register(app)
    >>> # then: fourfold advise --human-waiting --sla-ms 80 --json
    """
    app.command("advise")(advise_command)
