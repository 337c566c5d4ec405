from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fourfold import LocalRegistry, load_predictor
from fourfold.cli.main import app
from fourfold.demo.features import FEATURES
from fourfold.demo.run import run_demo


def test_demo_trains_compiles_and_registers_fraud_production(tmp_path: Path) -> None:
    report = run_demo(events=40_000, out_dir=tmp_path / "out")
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

    again = run_demo(events=40_000, out_dir=tmp_path / "out")  # a re-run is a new version, same data
    assert again.version == 2
    assert again.auc == report.auc
    assert LocalRegistry().lookup("models:/fraud/production").version == 2


def test_demo_command(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["demo", "--events", "20000", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "registered    models:/fraud/production" in r.stdout
