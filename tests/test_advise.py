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
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import fourfold.cli.advise as cli_advise
from fourfold.advise import (
    PATTERNS,
    Advice,
    Answers,
    LatencyReport,
    MissingAnswerError,
    advise,
    check_latency,
    measure_latency,
)

# --- the tree -------------------------------------------------------------------------------------

PRECOMPUTE = "pre-compute the results before they are needed?"
SENSITIVE = "time-sensitive (stale within minutes)?"


@pytest.mark.parametrize(
    ("answers", "pattern", "last_step", "in_reason"),
    [
        (Answers(human_waiting=True, sla_ms=80), "online", "SLA < 500 ms? yes (80 ms)", "under 500 ms"),
        (Answers(human_waiting=True, sla_ms=499.9), "online", "yes (499.9 ms)", "online over HTTP"),
        (
            Answers(human_waiting=True, sla_ms=500, can_precompute=True),
            "batch",
            f"{PRECOMPUTE} yes",
            "look them up at request time",
        ),
        (
            Answers(human_waiting=True, sla_ms=2000, can_precompute=False, features_time_sensitive=True),
            "streaming",
            f"{SENSITIVE} yes",
            "streaming keeps the features fresh",
        ),
        (
            Answers(human_waiting=True, sla_ms=2000, can_precompute=False, features_time_sensitive=False),
            "online",
            f"{SENSITIVE} no",
            "relaxed SLA",
        ),
        (
            Answers(human_waiting=False, can_precompute=True),
            "batch",
            f"{PRECOMPUTE} yes",
            "scheduled batch job",
        ),
        (
            Answers(human_waiting=False, can_precompute=False, features_time_sensitive=True),
            "streaming",
            f"{SENSITIVE} yes",
            "stale within minutes",
        ),
        (
            Answers(human_waiting=False, can_precompute=False, features_time_sensitive=False),
            "streaming",
            f"{SENSITIVE} no",
            "cannot be computed ahead",
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
    advice = advise(
        Answers(human_waiting=True, sla_ms=800, can_precompute=False, features_time_sensitive=False)
    )
    assert advice.pattern == "online"
    assert "unstated" in advice.reason
    assert "800 ms" in advice.reason


def test_path_records_each_question_and_answer() -> None:
    advice = advise(Answers(human_waiting=True, sla_ms=700, can_precompute=True))
    assert advice.path == (
        "Does data leaving the device create unacceptable risk or cost? no",
        "Is a human waiting for the result? yes",
        "Is the latency SLA < 500 ms? no (700 ms)",
        "Can you pre-compute the results before they are needed? yes",
    )
    relaxed = Answers(human_waiting=True, sla_ms=700, can_precompute=False, features_time_sensitive=True)
    assert advise(relaxed).path[2:] == (
        "Is the latency SLA < 500 ms? no (700 ms)",
        "Can you pre-compute the results before they are needed? no",
        "Are features time-sensitive (stale within minutes)? yes",
    )


# bug 1: without a human waiting the tree never asked "Can you pre-compute?"
def test_no_human_waiting_asks_can_precompute_first() -> None:
    advice = advise(Answers(human_waiting=False, can_precompute=True, features_time_sensitive=True))
    assert advice.pattern == "batch"
    assert advice.path[2] == "Can you pre-compute the results before they are needed? yes"
    assert len(advice.path) == 3  # time-sensitivity is not asked once results can be pre-computed
    assert "scheduled" in advice.reason
    assert any("stale" in w for w in advice.warnings)
    with pytest.raises(MissingAnswerError) as info:
        advise(Answers(human_waiting=False, features_time_sensitive=False))
    assert info.value.field == "can_precompute"


# bug 2: "can't pre-compute, not time-sensitive" answered batch, which needs pre-computed results
def test_cannot_precompute_never_answers_batch() -> None:
    advice = advise(Answers(human_waiting=False, can_precompute=False, features_time_sensitive=False))
    assert advice.pattern == "streaming"
    assert "scored when it arrives" in advice.reason
    assert "fourfold batch --every" in advice.reason
    assert advice.path[2:] == (
        "Can you pre-compute the results before they are needed? no",
        "Are features time-sensitive (stale within minutes)? no",
    )


# bug 3: on-device data was answered with the cascade, which sends the uncertain cases off the device
@pytest.mark.parametrize("human_waiting", [True, False])
def test_on_device_data_never_gets_the_cascade(human_waiting: bool) -> None:
    advice = advise(Answers(human_waiting=human_waiting, sla_ms=0.5, data_must_stay_on_device=True))
    assert advice.pattern == "embedded"
    assert _names(advice) == []
    (warning,) = advice.warnings
    assert "Embedded + Online" in warning
    assert "off the device" in warning
    assert "does not apply" in warning


def test_the_cascade_needs_an_sla_below_the_embedded_budget() -> None:
    tiny = advise(Answers(human_waiting=True, sla_ms=0.5))
    assert tiny.pattern == "online"
    assert _names(tiny) == ["Embedded + Online"]
    assert any("no room for a network hop" in w for w in tiny.warnings)
    assert "Embedded + Online" not in _names(advise(Answers(human_waiting=True, sla_ms=1)))


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
        # a human waits seconds for streaming-fresh features: online reads them
        (
            Answers(human_waiting=True, sla_ms=900, can_precompute=False, features_time_sensitive=True),
            ["Streaming + Online"],
        ),
        (
            Answers(
                human_waiting=True,
                sla_ms=900,
                can_precompute=False,
                features_time_sensitive=False,
                has_precomputable_entity_features=True,
            ),
            ["Batch + Online"],
        ),
        (
            Answers(human_waiting=True, sla_ms=0.5, has_precomputable_entity_features=True),
            [
                "Batch + Online",
                "Embedded + Online",
            ],
        ),
        (Answers(human_waiting=True, data_must_stay_on_device=True), []),
        (Answers(human_waiting=False, data_must_stay_on_device=True), []),
        # no human waits: nothing online to pair with
        (
            Answers(
                human_waiting=False,
                can_precompute=False,
                features_time_sensitive=True,
                has_precomputable_entity_features=True,
            ),
            [],
        ),
        (Answers(human_waiting=False, can_precompute=True, has_precomputable_entity_features=True), []),
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
    assert _names(advice) == []
    # no further answers are needed once the override applies
    assert advise(Answers(human_waiting=True, data_must_stay_on_device=True)).pattern == "embedded"


@pytest.mark.parametrize(
    ("answers", "field", "question"),
    [
        (Answers(human_waiting=True, data_must_stay_on_device=None), "data_must_stay_on_device", "device"),
        (Answers(human_waiting=True), "sla_ms", "latency SLA"),
        (Answers(human_waiting=True, sla_ms=600), "can_precompute", "pre-compute"),
        (Answers(human_waiting=True, sla_ms=600, can_precompute=False), "features_time_sensitive", "time-"),
        (Answers(human_waiting=False), "can_precompute", "pre-compute"),
        (Answers(human_waiting=False, can_precompute=False), "features_time_sensitive", "time-sensitive"),
    ],
)
def test_missing_answer_names_the_question(answers: Answers, field: str, question: str) -> None:
    with pytest.raises(ValueError, match=question) as info:
        advise(answers)
    assert isinstance(info.value, MissingAnswerError)
    assert info.value.field == field
    assert field in str(info.value)


def test_on_device_defaults_to_no_in_the_python_api() -> None:
    answers = Answers(human_waiting=True, sla_ms=80)
    assert answers.data_must_stay_on_device is False
    assert advise(answers).path[0].endswith("risk or cost? no")


_maybe_bool = st.none() | st.booleans()


@given(
    answers=st.builds(
        Answers,
        human_waiting=st.booleans(),
        sla_ms=st.none() | st.sampled_from([0.001, 0.5, 1.0, 80.0, 499.9, 500.0, 2000.0]),
        can_precompute=_maybe_bool,
        features_time_sensitive=_maybe_bool,
        data_must_stay_on_device=_maybe_bool,
        has_precomputable_entity_features=st.booleans(),
    )
)
def test_property_every_combination_of_answers(answers: Answers) -> None:
    try:
        advice = advise(answers)
    except MissingAnswerError as exc:
        missing: str | None = exc.field
    else:
        missing = None
    if missing is not None:
        assert getattr(answers, missing) is None  # only an unanswered question is reported missing
        return
    assert advice.pattern in PATTERNS
    if answers.can_precompute is False:
        assert advice.pattern != "batch"
    if answers.data_must_stay_on_device:
        assert advice.pattern == "embedded"
        assert "Embedded + Online" not in _names(advice)
    assert len(advice.path) >= 2
    assert all(step.endswith(("yes", "no", "ms)")) for step in advice.path)


@given(
    human_waiting=st.booleans(),
    sla_ms=st.sampled_from([0.5, 80.0, 2000.0]),
    can_precompute=st.booleans(),
    features_time_sensitive=st.booleans(),
    data_must_stay_on_device=st.booleans(),
)
def test_property_complete_answers_never_raise(
    human_waiting: bool,
    sla_ms: float,
    can_precompute: bool,
    features_time_sensitive: bool,
    data_must_stay_on_device: bool,
) -> None:
    answers = Answers(
        human_waiting, sla_ms, can_precompute, features_time_sensitive, data_must_stay_on_device
    )
    assert advise(answers).pattern in PATTERNS


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
    batch = advise(Answers(human_waiting=False, can_precompute=True))
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
        (["--human-waiting", "--sla-ms", "900", "--no-can-precompute", "--time-sensitive"], "streaming"),
        (["--human-waiting", "--sla-ms", "900", "--no-can-precompute", "--no-time-sensitive"], "online"),
        (["--no-human-waiting", "--can-precompute"], "batch"),
        (["--no-human-waiting", "--no-can-precompute", "--time-sensitive"], "streaming"),
        (["--no-human-waiting", "--no-can-precompute", "--no-time-sensitive"], "streaming"),
        (["--no-human-waiting", "--on-device"], "embedded"),
    ],
)
def test_cli_each_branch_as_json(app: typer.Typer, flags: list[str], pattern: str) -> None:
    result = runner.invoke(app, ["advise", *flags, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"pattern", "reason", "path", "hybrids", "warnings", "answers"}
    assert payload["pattern"] == pattern
    assert payload["path"]
    assert payload["reason"]
    assert payload["answers"]["human_waiting"] == ("--human-waiting" in flags)
    assert payload["answers"]["data_must_stay_on_device"] == ("--on-device" in flags)


def test_cli_json_hybrids(app: typer.Typer) -> None:
    flags = ["--human-waiting", "--sla-ms", "80", "--entity-features", "--time-sensitive", "--json"]
    payload = json.loads(runner.invoke(app, ["advise", *flags]).stdout)
    assert [h["name"] for h in payload["hybrids"]] == ["Batch + Online", "Streaming + Online"]
    tiny = json.loads(runner.invoke(app, ["advise", "--human-waiting", "--sla-ms", "0.5", "--json"]).stdout)
    assert [h["name"] for h in tiny["hybrids"]] == ["Embedded + Online"]


# bug 3, from the command line
def test_cli_on_device_gets_no_cascade(app: typer.Typer) -> None:
    result = runner.invoke(app, ["advise", "--human-waiting", "--sla-ms", "0.5", "--on-device", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["pattern"] == "embedded"
    assert payload["hybrids"] == []
    assert any("off the device" in w for w in payload["warnings"])


# bug 1, from the command line: --can-precompute is enough without a human waiting
def test_cli_no_human_waiting_asks_can_precompute(app: typer.Typer) -> None:
    result = runner.invoke(app, ["advise", "--no-human-waiting", "--can-precompute", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["pattern"] == "batch"
    assert payload["path"][-1] == "Can you pre-compute the results before they are needed? yes"


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
        (["--human-waiting", "--sla-ms", "900", "--no-can-precompute"], "--time-sensitive"),
        (["--no-human-waiting"], "--can-precompute"),
        (["--no-human-waiting", "--no-can-precompute"], "--time-sensitive"),
    ],
)
def test_cli_missing_flag_without_a_terminal(app: typer.Typer, flags: list[str], named: str) -> None:
    result = runner.invoke(app, ["advise", *flags, "--json"])
    assert result.exit_code == 2
    assert named in result.stderr
    assert "missing answer" in result.stderr
    assert result.stdout == ""


def test_cli_on_device_defaults_to_no_without_a_terminal(app: typer.Typer) -> None:
    result = runner.invoke(app, ["advise", "--human-waiting", "--sla-ms", "80", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["answers"]["data_must_stay_on_device"] is False
    assert payload["path"][0].endswith("risk or cost? no")
    assert "Does data leaving the device" not in result.stderr  # not asked


@pytest.mark.parametrize("sla", ["0", "-3"])
def test_cli_invalid_sla(app: typer.Typer, sla: str) -> None:
    result = runner.invoke(app, ["advise", "--human-waiting", "--sla-ms", sla])
    assert result.exit_code == 2
    assert "--sla-ms" in result.stderr


@pytest.mark.parametrize(
    ("flags", "typed", "pattern"),
    [
        ([], "n\ny\n80\n", "online"),
        ([], "n\nn\nn\ny\n", "streaming"),
        ([], "n\nn\ny\n", "batch"),
        (["--human-waiting"], "n\n1200\nn\nn\n", "online"),
        (["--human-waiting"], "n\n1200\nn\ny\n", "streaming"),
        (["--no-on-device"], "y\n80\n", "online"),
    ],
)
def test_cli_asks_missing_answers_on_a_terminal(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch, flags: list[str], typed: str, pattern: str
) -> None:
    monkeypatch.setattr(cli_advise, "_interactive", lambda: True)
    result = runner.invoke(app, ["advise", *flags], input=typed)
    assert result.exit_code == 0, result.output
    assert f"Recommended pattern: {pattern}" in result.output


# bug 4: the on-device question was never asked interactively
def test_cli_asks_the_on_device_question_first_on_a_terminal(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_advise, "_interactive", lambda: True)
    result = runner.invoke(app, ["advise"], input="y\ny\n")
    assert result.exit_code == 0, result.output
    on_device = result.stderr.index("Does data leaving the device create unacceptable risk or cost?")
    assert on_device < result.stderr.index("Is a human waiting for the result?")
    assert "Recommended pattern: embedded" in result.stdout
    assert "1. Does data leaving the device create unacceptable risk or cost? yes" in result.stdout
    assert "Hybrids: none" in result.stdout
    assert "off the device" in result.stdout


def test_cli_on_device_flag_is_not_asked_again(app: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_advise, "_interactive", lambda: True)
    result = runner.invoke(app, ["advise", "--on-device", "--human-waiting", "--json"], input="")
    assert result.exit_code == 0, result.output
    assert "Does data leaving the device" not in result.stderr
    assert json.loads(result.stdout)["pattern"] == "embedded"
