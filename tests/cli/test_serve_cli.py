"""``fourfold serve`` refuses what it cannot serve before it says "serving", in one line, and exits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build
from fourfold import LocalRegistry, save_model


def _serve(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FOURFOLD_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "fourfold.cli.main", "serve", *args],
        env=env, capture_output=True, text=True, timeout=60,  # a hang fails the test, never the suite
    )  # fmt: skip


def _registered(tmp_path: Path) -> str:
    model, _, table = build("xgboost")
    LocalRegistry().register(
        save_model(model, tmp_path / "m", name="m", sample=table), name="m", aliases=["production"]
    )
    return "models:/m/production"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "99999"], "--port: Input should be less than or equal to 65535 (got 99999)"),
        (["--port", "-1"], "--port: Input should be greater than or equal to 0"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_a_setting_out_of_range_is_one_line_and_exit_1(
    fourfold_home: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    uri = _registered(tmp_path)
    r = _serve(uri, *args, home=fourfold_home)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: {r.stderr.strip().removeprefix('error: ')}"]
    assert needle in r.stderr
    assert "serving" not in r.stderr + r.stdout


def test_an_unknown_model_fails_before_serving(fourfold_home: Path) -> None:
    r = _serve("models:/nope/x", "--port", "0", home=fourfold_home)
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        == f"error: no model named 'nope' in {fourfold_home / 'registry'} (models: none registered)"
    )
    assert "serving" not in r.stderr + r.stdout


def test_a_port_in_use_is_refused(fourfold_home: Path, tmp_path: Path) -> None:
    uri = _registered(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _serve(uri, "--port", str(port), home=fourfold_home)
    assert r.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "serving" not in r.stderr + r.stdout
