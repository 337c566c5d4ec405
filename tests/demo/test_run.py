from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fourfold import LocalRegistry, load_predictor
from fourfold.cli.main import app
from fourfold.demo.features import FEATURES, FRAUD_FEATURES
from fourfold.demo.run import EXAMPLE_TRANSACTION, DemoReport, run_demo
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import open_store
from fourfold.settings import Settings

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


@dataclass(frozen=True)
class Demo:
    report: DemoReport
    home: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One 40k-event demo run shared by the tests that only read what it left behind."""
    home = tmp_path_factory.mktemp("demo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOURFOLD_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("FOURFOLD_REGISTRY", "auto")
        yield Demo(run_demo(events=40_000, out_dir=home / "out"), home)


@pytest.fixture
def report(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> DemoReport:
    monkeypatch.setenv("FOURFOLD_HOME", str(demo.home))  # the demo's registry and store, not this test's
    return demo.report


def _now_ms() -> int:
    return int(time.time() * 1000)


def _store_rows(users: list[str], at_ms: int | None = None) -> list[dict[str, float] | None]:
    with closing(open_store(Settings().store_url)) as store:
        return OnlineFeatures(FRAUD_FEATURES, store).get(users, at_ms=at_ms)


def _no_nan(row: dict[str, float]) -> dict[str, float | None]:
    return {k: None if math.isnan(v) else v for k, v in row.items()}


def _printed_users(text: str) -> list[str]:
    """The user ids in the report's table of online-path rows."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["user"]) + 1
    return [line.split()[0] for line in lines[start:] if line.startswith("    u")]


def test_demo_trains_compiles_and_registers_fraud_production(report: DemoReport) -> None:
    assert report.events == 40_000
    assert report.auc > 0.8
    assert report.uri == "models:/fraud/production"
    assert report.parity.startswith("parity passed")
    assert report.engines.startswith("offline = incremental engine on")
    assert " 0 mismatches" in report.engines
    assert set(report.latency) == {"native", "onnx"}
    assert all(r.single_row_p50_ms > 0 for r in report.latency.values())
    text = report.render()
    assert "AUC" in text
    assert "models:/fraud/production" in text

    p = load_predictor("models:/fraud/production")
    stored = p.package.features()
    assert stored is not None
    assert stored.names == tuple(FEATURES)
    assert p.runtime == "onnx"
    assert p.version == "1"
    assert p.signature.feature_names == tuple(FEATURES)
    row = dict.fromkeys(FEATURES, 1.0) | {"amount_mean_7d": None, "seconds_since_last": None}
    assert 0.0 <= float(p.predict_one(row)["score"]) <= 1.0  # type: ignore[arg-type]


def test_log_ends_now_and_holds_out_its_last_24_hours(report: DemoReport) -> None:
    ms = pq.read_table(report.log_path).column("event_time").cast("int64").to_numpy()
    as_of = int(report.online.as_of.timestamp() * 1000)
    assert as_of - _HOUR_MS < ms.max() < as_of
    assert ms.min() >= as_of - 7 * _DAY_MS - _HOUR_MS
    assert report.n_holdout == int((ms > ms.max() - _DAY_MS).sum())
    assert 0.1 < report.n_holdout / report.events < 0.2  # a whole day of seven, whatever the time of day


def test_store_holds_the_printed_users_windows_as_of_now(report: DemoReport) -> None:
    online = report.online
    users = [u.user_id for u in online.users]
    assert len(users) == 3
    assert _printed_users(report.render()) == users
    assert online.store_url == Settings().store_url
    assert online.entities == report.users
    assert online.stale == 0

    now = _store_rows(users)
    assert all(row is not None for row in now)
    assert max(row["txn_count_1h"] for row in now if row is not None) > 0
    assert all(row is not None and row["amount_mean_7d"] > 0 for row in now)  # 7 days of history
    at_report = _store_rows(users, at_ms=int(online.as_of.timestamp() * 1000))
    for user, row in zip(online.users, at_report, strict=True):
        assert row is not None
        assert _no_nan({k: row[k] for k in user.features}) == _no_nan(user.features)
        assert user.features["txn_count_1h"] > 0


def test_printed_users_scores_differ_and_are_the_models(report: DemoReport) -> None:
    users = report.online.users
    scores = [u.score for u in users]
    assert len({round(s, 4) for s in scores}) == 3
    assert scores == sorted(scores, reverse=True)
    p = load_predictor("models:/fraud/production")
    rows = _store_rows([u.user_id for u in users], at_ms=int(report.online.as_of.timestamp() * 1000))
    for user, row in zip(users, rows, strict=True):
        assert row is not None
        assert p.predict_one({**row, **EXAMPLE_TRANSACTION})["score"] == pytest.approx(user.score, abs=1e-12)
    text = report.render()
    for user in users:
        assert f"{user.score:.4f}" in text


def test_report_prints_the_next_commands_with_a_real_user(report: DemoReport) -> None:
    text = report.render()
    user = report.online.users[0].user_id
    assert f"fourfold features get {user} -f models:/fraud/production" in text
    assert "fourfold serve models:/fraud/production" in text
    [curl] = [line.strip() for line in text.splitlines() if "curl -s" in line]
    args = shlex.split(curl)
    assert args[:3] == ["curl", "-s", "localhost:8000/predict"]
    assert args[args.index("-H") + 1] == "content-type: application/json"
    body = json.loads(args[args.index("-d") + 1])
    assert body == {"user_id": user, **EXAMPLE_TRANSACTION}
    assert _store_rows([user])[0] is not None


def test_rerun_replaces_the_online_state_and_still_works(tmp_path: Path) -> None:
    first = run_demo(events=20_000, seed=1, out_dir=tmp_path / "out")
    again = run_demo(events=20_000, seed=0, out_dir=tmp_path / "out")
    assert (first.version, again.version) == (1, 2)
    assert LocalRegistry().lookup("models:/fraud/production").version == 2
    assert again.online.stale == 0
    assert len({round(u.score, 4) for u in again.online.users}) == 3

    # Every user of the new log holds exactly the new log's state, also where the old log's newest event
    # for that user was the later one.
    log = pq.read_table(again.log_path)
    users = sorted({str(u) for u in log.column("user_id").to_pylist()})
    at_ms = _now_ms()
    expected = OnlineFeatures(FRAUD_FEATURES, open_store("memory://"))
    expected.materialize(log)
    got = _store_rows(users, at_ms=at_ms)
    want = expected.get(users, at_ms=at_ms)
    assert [_no_nan(r) if r else r for r in got] == [_no_nan(r) if r else r for r in want]
    assert max(r["txn_count_1h"] for r in got if r is not None) > 0


def test_demo_command_then_features_get_prints_non_zero_counts(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["demo", "--events", "20000", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "registered    models:/fraud/production" in r.stdout

    users = _printed_users(r.stdout)
    [command] = [
        line.split(maxsplit=1)[1] for line in r.stdout.splitlines() if "fourfold features get" in line
    ]
    args = shlex.split(command)
    assert args[:3] == ["fourfold", "features", "get"]
    got = runner.invoke(app, [*args[1:3], *users, *args[4:]])
    assert got.exit_code == 0, got.output
    rows = [json.loads(line) for line in got.stdout.splitlines()]
    assert [row["entity"] for row in rows] == users
    assert all(row["features"] is not None for row in rows)
    assert max(row["features"]["txn_count_1h"] for row in rows) > 0
    assert max(row["features"]["amount_sum_1h"] for row in rows) > 0


def test_the_four_patterns_give_the_same_five_scores(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    """fourfold demo --all: online, batch, streaming and embedded score five new transactions alike."""
    from fourfold.demo.four import PATTERNS, run_four

    monkeypatch.setenv("FOURFOLD_HOME", str(demo.home))
    r = demo.report
    four = run_four(r.uri, r.log_path, Settings().store_url, demo.home / "out")
    assert len(four.events) == 5
    assert len({e["user_id"] for e in four.events}) == 5
    for p in PATTERNS:
        assert len(four.scores[p]) == 5
        assert all(0.0 <= s <= 1.0 for s in four.scores[p])
    assert four.identical, four.scores
    text = four.render()
    assert "identical in every pattern" in text
    assert "events/s" in four.measures["streaming"]
    assert "rows/s" in four.measures["batch"]
    assert (four.bundle / "edge.json").is_file()
    # the stream folded the five events into the store /predict reads
    rows = _store_rows([e["user_id"] for e in four.events], at_ms=four.events[0]["event_time"] + 1)
    before = _store_rows([e["user_id"] for e in four.events], at_ms=four.events[0]["event_time"])
    for after, prior in zip(rows, before, strict=True):
        assert after is not None
        assert prior is not None
        assert after["txn_count_10m"] == prior["txn_count_10m"] + 1
