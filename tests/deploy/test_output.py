"""The output directory: never over files fourfold did not write, replaced in one step, nothing left
behind by a failed write; and `fourfold models pull`, the init container's command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deployed import invoke, load_resources
from fourfold import LocalRegistry
from fourfold.deploy import MARKER, write_tree
from fourfold.errors import ConflictError
from fourfold.registry.pull import pull_package


def test_a_directory_fourfold_did_not_write_is_refused(package: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = invoke("deploy", "k8s", str(package), "--pattern", "online", "--out", str(out))
    assert isinstance(result.exception, ConflictError)
    assert "fourfold did not write" in str(result.exception)
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_rerun_replaces_its_own_output_whole(generate: Any, tmp_path: Path) -> None:
    out = generate("--pattern", "online", "--scale-on", "inflight")
    assert (out / "prometheus-adapter-values.yaml").exists()
    marker = json.loads((out / MARKER).read_text())
    assert "hpa.yaml" in marker["files"]
    assert marker["model"] == "fraud"
    generate("--pattern", "online", "--scale-on", "none", "--replicas", "4", out=out)
    assert not (out / "prometheus-adapter-values.yaml").exists()  # the old file is gone, not merged
    assert not (out / "hpa.yaml").exists()
    assert load_resources(out)["Deployment"]["spec"]["replicas"] == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_failed_write_leaves_the_old_output(generate: Any, tmp_path: Path) -> None:
    out = generate("--pattern", "online")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileNotFoundError):
        write_tree(out, {"a.yaml": "x: 1\n", "model": tmp_path / "absent"}, model="fraud")
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pull_copies_a_verified_package_once(package: Path, tmp_path: Path) -> None:
    LocalRegistry().register(package, name="fraud", aliases=["production"])
    to = tmp_path / "models" / "fraud"
    result = invoke("models", "pull", "models:/fraud/production", "--to", str(to))
    assert result.exit_code == 0, result.output
    assert (to / "fourfold.yaml").read_bytes() == (package / "fourfold.yaml").read_bytes()
    assert pull_package("models:/fraud/production", to) is False  # an init container run again
    assert "already there" in invoke("models", "pull", "models:/fraud/1", "--to", str(to)).output


def test_pull_refuses_a_directory_holding_something_else(package: Path, tmp_path: Path) -> None:
    LocalRegistry().register(package, name="fraud")
    to = tmp_path / "busy"
    to.mkdir()
    (to / "x").write_text("x")
    with pytest.raises(ConflictError, match="holds something else"):
        pull_package("models:/fraud/1", to)
    assert (to / "x").read_text() == "x"
