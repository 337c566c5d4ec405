"""The serving-pattern decision tree, the latency check and the ``advise`` command."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest
import typer
from typer.testing import CliRunner

import fourfold.cli.advise as cli_advise
from fourfold.advise import (
    Advice,
    Answers,
    LatencyReport,
    MissingAnswerError,
    advise,
    check_latency,
    measure_latency,
)

# --- the tree -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "pattern", "last_step", "in_reason"),
    [
        (Answers(human_waiting=True, sla_ms=80), "online", "SLA < 500 ms? yes (80 ms)", "under 500 ms"),
        (Answers(human_waiting=True, sla_ms=499.9), "online", "yes (499.9 ms)", "online over HTTP"),
        (
            Answers(human_waiting=True, sla_ms=500, can_precompute=True),
            "batch",
            "pre-compute the results before the request? yes",
            "before the request",
        ),
        (
            Answers(human_waiting=True, sla_ms=2000, can_precompute=False),
            "online",
            "pre-compute the results before the request? no",
            "relaxed SLA",
        ),
        (
            Answers(human_waiting=False, features_time_sensitive=True),
            "streaming",
            "time-sensitive (stale within minutes)? yes",
            "stale within minutes",
        ),
        (
            Answers(human_waiting=False, features_time_sensitive=False),
            "batch",
            "time-sensitive (stale within minutes)? no",
            "scheduled batch job",
        ),
        (
            Answers(human_waiting=False, data_must_stay_on_device=True),
            "embedded",
            "human waiting for the result? no",
            "on the device",
        ),
    ],
)
def test_every_branch(answers: Answers, pattern: str, last_step: str, in_reason: str) -> None:
    advice = advise(answers)
    assert advice.pattern == pattern
    assert advice.path[-1].endswith(last_step)
    assert in_reason in advice.reason
    assert advice.path[0].startswith("Does data leaving the device")
    assert advice.path[1].startswith("Is a human waiting")


def test_unstated_case_says_so_in_the_reason() -> None:
    advice = advise(Answers(human_waiting=True, sla_ms=800, can_precompute=False))
    assert advice.pattern == "online"
    assert "unstated" in advice.reason
    assert "800 ms" in advice.reason


def test_path_records_each_question_and_answer() -> None:
    advice = advise(Answers(human_waiting=True, sla_ms=700, can_precompute=True))
    assert advice.path == (
        "Does data leaving the device create unacceptable risk or cost? no",
        "Is a human waiting for the result? yes",
        "Is the latency SLA < 500 ms? no (700 ms)",
        "Can you pre-compute the results before the request? yes",
    )


def _names(advice: Advice) -> list[str]:
    return [h.name for h in advice.hybrids]


@pytest.mark.parametrize(
    ("answers", "hybrids"),
    [
        (Answers(human_waiting=True, sla_ms=80), []),
        (Answers(human_waiting=True, sla_ms=80, has_precomputable_entity_features=True), ["Batch + Online"]),
        (Answers(human_waiting=True, sla_ms=80, can_precompute=True), ["Batch + Online"]),
        (Answers(human_waiting=True, sla_ms=80, features_time_sensitive=True), ["Streaming + Online"]),
        (
            Answers(human_waiting=True, sla_ms=80, features_time_sensitive=True, can_precompute=True),
            ["Batch + Online", "Streaming + Online"],
        ),
        (
            Answers(human_waiting=True, sla_ms=900, can_precompute=False, features_time_sensitive=True),
            ["Streaming + Online"],
        ),
        (Answers(human_waiting=True, data_must_stay_on_device=True), ["Embedded + Online"]),
        (Answers(human_waiting=False, data_must_stay_on_device=True), []),
        # hybrids are only suggested around an online (or embedded) choice
        (
            Answers(
                human_waiting=False, features_time_sensitive=True, has_precomputable_entity_features=True
            ),
            [],
        ),
        (Answers(human_waiting=True, sla_ms=900, can_precompute=True, features_time_sensitive=True), []),
    ],
)
def test_hybrids(answers: Answers, hybrids: list[str]) -> None:
    advice = advise(answers)
    assert _names(advice) == hybrids
    assert all(h.reason for h in advice.hybrids)


def test_embedded_overrides_the_rest_of_the_tree() -> None:
    online = Answers(human_waiting=True, sla_ms=50, has_precomputable_entity_features=True)
    advice = advise(dataclasses.replace(online, data_must_stay_on_device=True))
    assert advice.pattern == "embedded"
    assert advice.path[0].endswith("risk or cost? yes")
    assert "overrides" in advice.reason
    assert _names(advice) == ["Embedded + Online"]
    # no further answers are needed once the override applies
    assert advise(Answers(human_waiting=True, data_must_stay_on_device=True)).pattern == "embedded"


@pytest.mark.parametrize(
    ("answers", "field", "question"),
    [
        (Answers(human_waiting=True), "sla_ms", "latency SLA"),
        (Answers(human_waiting=True, sla_ms=600), "can_precompute", "pre-compute"),
        (Answers(human_waiting=False), "features_time_sensitive", "time-sensitive"),
    ],
)
def test_missing_answer_names_the_question(answers: Answers, field: str, question: str) -> None:
    with pytest.raises(ValueError, match=question) as info:
        advise(answers)
    assert isinstance(info.value, MissingAnswerError)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize("sla", [0.0, -5.0, math.nan, math.inf])
def test_invalid_sla(sla: float) -> None:
    with pytest.raises(ValueError, match="sla_ms"):
        Answers(human_waiting=True, sla_ms=sla)


def test_advice_warnings() -> None:
    tiny = advise(Answers(human_waiting=True, sla_ms=0.5))
    assert any("embedded" in w for w in tiny.warnings)
    stale = advise(Answers(human_waiting=True, sla_ms=900, can_precompute=True, features_time_sensitive=True))
    assert any("stale" in w for w in stale.warnings)
    assert advise(Answers(human_waiting=True, sla_ms=80)).warnings == ()


def test_results_are_frozen() -> None:
    advice = advise(Answers(human_waiting=True, sla_ms=80))
    with pytest.raises(dataclasses.FrozenInstanceError):
        advice.pattern = "batch"  # type: ignore[misc]


# --- latency --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FakeSignature:
    feature_names: tuple[str, ...]


class LinearPredictor:
    """score = 2 a - b + 0.5 c, with an optional sleep in ``predict_one``."""

    weights: ClassVar[dict[str, float]] = {"a": 2.0, "b": -1.0, "c": 0.5}

    def __init__(self, delay_s: float = 0.0) -> None:
        self.signature = FakeSignature(tuple(self.weights))
        self.delay_s = delay_s
        self.rows: list[dict[str, float]] = []
        self.batches: list[dict[str, npt.NDArray[Any]]] = []

    def predict(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        self.batches.append(dict(batch))
        x = np.column_stack([batch[k] for k in self.weights])
        return {"score": x @ np.array(list(self.weights.values()))}

    def predict_one(self, row: Mapping[str, float]) -> dict[str, object]:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.rows.append(dict(row))
        return {"score": sum(w * row[k] for k, w in self.weights.items())}


def test_measure_latency_times_rows_and_one_batch() -> None:
    predictor = LinearPredictor()
    report = measure_latency(predictor, rows=50, batch_size=1_000)
    assert report.batch_rows == 1_000
    assert 0 < report.single_row_p50_ms <= report.single_row_p99_ms
    assert report.batch_ms > 0
    assert report.batch_rows_per_s == pytest.approx(1_000 / (report.batch_ms / 1e3))
    assert len(predictor.rows) > 50  # warm-up calls come first
    assert len(predictor.batches) == 2  # warm-up + timed
    for batch in predictor.batches:
        assert set(batch) == {"a", "b", "c"}
        assert all(col.dtype == np.float64 and col.shape == (1_000,) for col in batch.values())
    assert all(set(row) == {"a", "b", "c"} and isinstance(row["a"], float) for row in predictor.rows)


def test_measure_latency_uses_the_sample() -> None:
    predictor = LinearPredictor()
    sample = {"a": [1.0, 2.0, 3.0], "b": [0.0, 0.0, 0.0], "c": [4.0, 5.0, 6.0]}
    measure_latency(predictor, rows=6, batch_size=7, sample=sample)
    assert {row["a"] for row in predictor.rows} == {1.0, 2.0, 3.0}
    assert predictor.batches[-1]["c"].tolist() == [4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 4.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rows": 0}, "rows"),
        ({"batch_size": 0}, "batch_size"),
        ({"sample": {"a": [1.0], "b": [1.0, 2.0]}}, "sample"),
        ({"sample": {"a": []}}, "sample"),
    ],
)
def test_measure_latency_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        measure_latency(LinearPredictor(), **kwargs)


def _report(p99: float) -> LatencyReport:
    return LatencyReport(p99 / 2, p99, 10_000, 5.0, 2e6)


def test_check_latency_online_uses_the_inference_share_of_the_sla() -> None:
    online = advise(Answers(human_waiting=True, sla_ms=100))
    (warning,) = check_latency(online, _report(20.0), 100)
    assert "20.000 ms" in warning  # measured
    assert "15.000 ms (15% of 100 ms)" in warning  # limit
    assert check_latency(online, _report(20.0), 200) == ()  # 15 % of 200 ms = 30 ms
    assert check_latency(online, _report(10.0)) == ()  # default budget 100 ms -> 15 ms
    assert len(check_latency(online, _report(16.0))) == 1


def test_check_latency_embedded_and_others() -> None:
    embedded = advise(Answers(human_waiting=False, data_must_stay_on_device=True))
    (warning,) = check_latency(embedded, _report(1.5))
    assert "1.500 ms" in warning
    assert "limit of 1 ms" in warning
    assert check_latency(embedded, _report(0.5)) == ()
    batch = advise(Answers(human_waiting=False, features_time_sensitive=False))
    assert check_latency(batch, _report(500.0), 100) == ()
    with pytest.raises(ValueError, match="sla_ms"):
        check_latency(batch, _report(1.0), -1)


def test_slow_predictor_triggers_the_warning() -> None:
    report = measure_latency(LinearPredictor(delay_s=0.002), rows=5, batch_size=10)
    assert report.single_row_p99_ms >= 2.0
    embedded = advise(Answers(human_waiting=True, data_must_stay_on_device=True))
    (warning,) = check_latency(embedded, report)
    assert f"{report.single_row_p99_ms:.3f} ms" in warning
    online = advise(Answers(human_waiting=True, sla_ms=10))
    assert len(check_latency(online, report, 10)) == 1  # 2 ms > 1.5 ms


# --- the command ----------------------------------------------------------------------------------


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """fourfold (test app)."""

    cli_advise.register(app)
    return app


runner = CliRunner()


@pytest.mark.parametrize(
    ("flags", "pattern"),
    [
        (["--human-waiting", "--sla-ms", "80"], "online"),
        (["--human-waiting", "--sla-ms", "900", "--can-precompute"], "batch"),
        (["--human-waiting", "--sla-ms", "900", "--no-can-precompute"], "online"),
        (["--no-human-waiting", "--time-sensitive"], "streaming"),
        (["--no-human-waiting", "--no-time-sensitive"], "batch"),
        (["--no-human-waiting", "--on-device"], "embedded"),
    ],
)
def test_cli_each_branch_as_json(app: typer.Typer, flags: list[str], pattern: str) -> None:
    result = runner.invoke(app, ["advise", *flags, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["pattern"] == pattern
    assert payload["path"]
    assert payload["reason"]
    assert payload["answers"]["human_waiting"] == ("--human-waiting" in flags)


def test_cli_json_hybrids(app: typer.Typer) -> None:
    flags = ["--human-waiting", "--sla-ms", "80", "--entity-features", "--time-sensitive", "--json"]
    payload = json.loads(runner.invoke(app, ["advise", *flags]).stdout)
    assert [h["name"] for h in payload["hybrids"]] == ["Batch + Online", "Streaming + Online"]
    cascade = json.loads(runner.invoke(app, ["advise", "--human-waiting", "--on-device", "--json"]).stdout)
    assert cascade["pattern"] == "embedded"
    assert [h["name"] for h in cascade["hybrids"]] == ["Embedded + Online"]


def test_cli_text_output(app: typer.Typer) -> None:
    result = runner.invoke(app, ["advise", "--human-waiting", "--sla-ms", "80", "--entity-features"])
    assert result.exit_code == 0, result.output
    assert "Recommended pattern: online" in result.stdout
    assert "Reason: A human is waiting" in result.stdout
    assert "1. Does data leaving the device" in result.stdout
    assert "Batch + Online" in result.stdout


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ([], "--human-waiting"),
        (["--human-waiting"], "--sla-ms"),
        (["--human-waiting", "--sla-ms", "900"], "--can-precompute"),
        (["--no-human-waiting"], "--time-sensitive"),
    ],
)
def test_cli_missing_flag_without_a_terminal(app: typer.Typer, flags: list[str], named: str) -> None:
    result = runner.invoke(app, ["advise", *flags, "--json"])
    assert result.exit_code == 2
    assert named in result.stderr
    assert "missing answer" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("sla", ["0", "-3"])
def test_cli_invalid_sla(app: typer.Typer, sla: str) -> None:
    result = runner.invoke(app, ["advise", "--human-waiting", "--sla-ms", sla])
    assert result.exit_code == 2
    assert "--sla-ms" in result.stderr


@pytest.mark.parametrize(
    ("flags", "typed", "pattern"),
    [
        ([], "y\n80\n", "online"),
        ([], "n\ny\n", "streaming"),
        (["--human-waiting"], "1200\nn\n", "online"),
    ],
)
def test_cli_asks_missing_answers_on_a_terminal(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch, flags: list[str], typed: str, pattern: str
) -> None:
    monkeypatch.setattr(cli_advise, "_interactive", lambda: True)
    result = runner.invoke(app, ["advise", *flags], input=typed)
    assert result.exit_code == 0, result.output
    assert f"Recommended pattern: {pattern}" in result.output
