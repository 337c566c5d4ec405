from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import build
from fourfold import LocalRegistry, save_model
from fourfold.cli.main import app

runner = CliRunner()


@pytest.fixture
def package(tmp_path: Path) -> Path:
    model, _, table = build("xgboost")
    return save_model(model, tmp_path / "pkg", name="fraud", sample=table).path


def test_models_register_alias_list_show(package: Path) -> None:
    r = runner.invoke(app, ["models", "register", str(package), "--name", "fraud", "--alias", "staging"])
    assert r.exit_code == 0, r.output
    assert "registered models:/fraud/1 (aliases: staging)" in r.output
    runner.invoke(app, ["models", "register", str(package), "--name", "fraud"])
    r = runner.invoke(app, ["models", "alias", "fraud", "2", "production"])
    assert r.exit_code == 0
    assert "models:/fraud/production -> version 2" in r.output

    r = runner.invoke(app, ["models", "list", "--json"])
    rows = json.loads(r.output)
    assert [(x["version"], x["aliases"]) for x in rows] == [(1, ["staging"]), (2, ["production"])]
    r = runner.invoke(app, ["models", "list"])
    assert "fraud" in r.output
    assert "production" in r.output

    r = runner.invoke(app, ["models", "show", "models:/fraud/production"])
    shown = json.loads(r.output)
    assert shown["version"] == "2"
    assert shown["flavor"] == "xgboost"
    assert [f["name"] for f in shown["signature"]["inputs"]] == [f"x{i}" for i in range(5)]


def test_compile_command_reports_parity(package: Path) -> None:
    LocalRegistry().register(package, name="fraud", aliases=["production"])
    r = runner.invoke(app, ["compile", "models:/fraud/production"])
    assert r.exit_code == 0, r.output
    assert "parity passed" in r.output
    assert "boundary_probes" in r.output
    assert "onnx" in LocalRegistry().resolve("models:/fraud/1").runtimes
    r = runner.invoke(app, ["compile", str(package), "--json"])
    assert json.loads(r.output)["passed"] is True


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FOURFOLD_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "fourfold.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_errors_print_a_message_not_a_traceback(fourfold_home: Path, tmp_path: Path) -> None:
    r = _cli("models", "show", "models:/nope/production", home=fourfold_home)
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        == f"error: no model named 'nope' in {fourfold_home / 'registry'} (models: none registered)"
    )
    r = _cli("models", "register", str(tmp_path), "--name", "../evil", home=fourfold_home)
    assert r.returncode == 1
    assert "invalid model name '../evil'" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("models", "bogus", home=fourfold_home)
    assert r.returncode == 2
    assert "No such command" in r.stderr
