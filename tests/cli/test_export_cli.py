from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import build
from fourfold import LocalRegistry, save_model


def _fourfold(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from fourfold.cli.main import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_export_a_registered_model_and_its_errors(tmp_path: Path) -> None:
    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "pkg", name="fraud", sample=table)
    LocalRegistry().register(pkg.path, name="fraud")
    out = tmp_path / "edge"
    done = _fourfold("export", "models:/fraud/1", "--format", "onnx", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "gate passed" in done.stdout
    assert "split_probes" in done.stdout
    manifest = json.loads((out / "edge.json").read_text())
    assert manifest["name"] == "fraud"
    assert manifest["version"] == "1"

    bad = _fourfold("export", "models:/fraud/1", "--format", "tflight", "--out", str(tmp_path / "x"))
    assert bad.returncode == 1
    assert "--format must be one of" in bad.stderr
    assert "Traceback" not in bad.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("x")
    clash = _fourfold("export", "models:/fraud/1", "--out", str(mine))
    assert clash.returncode == 1
    assert "not an edge bundle" in clash.stderr
    assert (mine / "a.txt").read_text() == "x"
    assert not (tmp_path / "x").exists()


def test_bench_embedded_prints_every_runtime(tmp_path: Path) -> None:
    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "pkg", name="fraud", sample=table)
    done = _fourfold("bench-embedded", str(pkg.path), "--calls", "200", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    lines = {line.split("  ")[0].strip(): line for line in done.stdout.splitlines()[1:]}
    assert set(lines) == {
        "native (predictor)",
        "onnx (edge runtime)",
        "c (edge runtime)",
        "cascade, local path",
    }
    for line in lines.values():
        p50, p99 = (float(v) for v in line.split()[-2:])
        assert 0 < p50 <= p99
