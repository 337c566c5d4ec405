from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from fourfold.cli.main import app
from fourfold.features import IncrementalEngine
from pit import feature_set

runner = CliRunner()


def _files(tmp_path: Path) -> tuple[Path, Path, pa.Table]:
    fs = feature_set("50ms")
    fs.dump(tmp_path / "features.yaml")
    log = pa.table(
        {
            "user_id": ["a", "b", "a", "a", "b", "a"],
            "ts": [0, 5, 40, 90, 95, 20],  # the last one is late for 'a' (90 - 50 > 20)
            "amount": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
            "merchant": ["x", "y", "x", "z", "y", "x"],
        }
    )
    pq.write_table(log, tmp_path / "log.parquet")
    return tmp_path / "features.yaml", tmp_path / "log.parquet", log


def test_compute_materialize_get(tmp_path: Path, fourfold_home: Path) -> None:
    fs_path, log_path, log = _files(tmp_path)
    r = runner.invoke(
        app,
        [
            "features",
            "compute",
            "-f",
            str(fs_path),
            "--log",
            str(log_path),
            "--out",
            str(tmp_path / "f.parquet"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "6 events" in r.output
    assert "1 late" in r.output
    computed = pq.read_table(tmp_path / "f.parquet").to_pylist()
    assert computed[3]["n_100"] == 2  # a at 90 sees 0 and 40
    assert computed[5]["_late"] is True

    r = runner.invoke(app, ["features", "materialize", "-f", str(fs_path), "--log", str(log_path)])
    assert r.exit_code == 0, r.output
    assert "2 entities from 6 events" in r.output
    assert (fourfold_home / "features.db").exists()  # the embedded default store

    r = runner.invoke(app, ["features", "get", "a", "b", "nobody", "-f", str(fs_path), "--at", "100"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    engine = IncrementalEngine(feature_set("50ms"))
    for row in log.to_pylist():
        engine.process(row)
    for got in rows[:2]:
        want = engine.read(got["entity"], 100)
        for name, value in want.items():
            assert got["features"][name] == (None if math.isnan(value) else value), name
    assert rows[2] == {"entity": "nobody", "features": None}


def test_get_with_iso_time_and_bad_time(tmp_path: Path) -> None:
    fs_path, log_path, _ = _files(tmp_path)
    runner.invoke(app, ["features", "materialize", "-f", str(fs_path), "--log", str(log_path)])
    r = runner.invoke(app, ["features", "get", "a", "-f", str(fs_path), "--at", "1970-01-01T00:00:00.100Z"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["features"]["n_100"] == 3.0  # 0, 40 and 90 are in [0, 100)
    r = runner.invoke(app, ["features", "get", "a", "-f", str(fs_path), "--at", "yesterday"])
    assert r.exit_code != 0
    assert "use ISO 8601" in str(r.exception)
