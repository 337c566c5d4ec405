"""Cascade calibration: the band picked on one sample meets its target on held-out data."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FEATURES, make_data
from fourfold import save_model
from fourfold.embedded.calibrate import calibrate
from fourfold.embedded.export import export_bundle


def _models(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    import xgboost as xgb

    x, y, _ = make_data(8000, seed=3)
    table = pa.table({name: x[:4000, i] for i, name in enumerate(FEATURES)})
    small = xgb.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(x[:4000], y[:4000])
    big = xgb.XGBClassifier(n_estimators=120, max_depth=4, n_jobs=1).fit(x[:4000], y[:4000])
    edge_pkg = save_model(small, tmp_path / "small", name="small", sample=table)
    server_pkg = save_model(big, tmp_path / "big", name="big", sample=table)
    export_bundle(edge_pkg.path, "onnx", tmp_path / "edge")
    return tmp_path / "edge", server_pkg.path, x[4000:], y[4000:]


def _write(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    cols = {name: x[:, i] for i, name in enumerate(FEATURES)} | {"label": y}
    pq.write_table(pa.table(cols), path)
    return path


def test_the_band_meets_its_target_on_held_out_rows(tmp_path: Path) -> None:
    from fourfold import Predictor, load_package
    from fourfold.edge import EdgeModel

    edge_dir, server_path, x, y = _models(tmp_path)
    edge, server = EdgeModel(edge_dir), Predictor(load_package(server_path))
    cal_x, cal_y, held_x, held_y = x[:2000], y[:2000], x[2000:], y[2000:]
    cal = calibrate(edge.predict(cal_x)["score"], server.predict(cal_x)["label"], cal_y,
                    threshold=edge.threshold, target_share=0.3, max_loss=0.02)  # fmt: skip
    assert cal.ok, cal.message
    assert cal.server_accuracy > cal.local_accuracy  # the small model is worse: the cascade has a point
    assert cal.pick.share <= 0.3
    assert cal.pick.low <= edge.threshold <= cal.pick.high
    # held out: route as CascadeModel does, and measure
    s = edge.predict(held_x)["score"]
    to_server = (s >= cal.pick.low) & (s <= cal.pick.high)
    labels = np.where(to_server, server.predict(held_x)["label"], (s > edge.threshold).astype(np.int64))
    server_acc = float(np.mean(server.predict(held_x)["label"] == held_y))
    assert to_server.mean() <= 0.3 + 0.05
    assert server_acc - float(np.mean(labels == held_y)) <= 0.02 + 0.01
    # the table is monotone: a larger share never loses more
    losses = [b.loss for b in cal.table]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(losses))
    assert cal.table[-1].loss == pytest.approx(0.0)


def test_an_unreachable_bound_fails_and_says_what_it_needs() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 1000)
    local = rng.random(1000)  # an edge model that knows nothing
    cal = calibrate(local, truth, truth, threshold=0.5, target_share=0.1, max_loss=0.01)
    assert not cal.ok
    assert "the bound needs" in cal.message
    with pytest.raises(ValueError, match="target share"):
        calibrate(local, truth, truth, threshold=0.5, target_share=1.5, max_loss=0.01)


def test_the_cli_prints_the_table_and_writes_the_plot(tmp_path: Path) -> None:
    edge_dir, server_path, x, y = _models(tmp_path)
    data = _write(tmp_path / "labelled.parquet", x, y)
    png = tmp_path / "tradeoff.png"
    code = "from fourfold.cli.main import main; main()"
    args = ["cascade", "calibrate", str(edge_dir), "--data", str(data), "--server-model", str(server_path),
            "--target-share", "0.3", "--max-loss", "0.02", "--plot", str(png)]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pick: low=" in done.stdout
    assert "share<=" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    strict = [*args[:-6], "--target-share", "0.0", "--max-loss", "0.0"]
    failed = subprocess.run(
        [sys.executable, "-c", code, *strict], capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 1
    assert "FAILED" in failed.stdout
    nolabel = [*args[:5], "--server-model", str(server_path), "--label", "truth"]
    bad = subprocess.run([sys.executable, "-c", code, *nolabel], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert "no label column 'truth'" in bad.stderr
