"""The ``c`` export target: the package's C build reused (or built), loaded by the edge runner, rebuilt
from the shipped sources with ``make``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import build
from fourfold import compile_model, save_model
from fourfold.edge.runners import load_runner
from fourfold.embedded.targets import get_exporter
from fourfold.errors import InvalidOptionError
from fourfold.model.package import ModelPackage, load_package


@pytest.fixture(scope="module")
def lightgbm_pkg(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelPackage, np.ndarray]:
    model, x, table = build("lightgbm")
    pkg = save_model(model, tmp_path_factory.mktemp("lgb") / "m", name="m", sample=table)
    return pkg, x


def test_exports_the_packages_build_or_builds_one(
    lightgbm_pkg: tuple[ModelPackage, np.ndarray], tmp_path: Path
) -> None:
    pkg, x = lightgbm_pkg
    export = get_exporter("c")
    native = pkg.load_native().predict_raw(x)

    fresh = export(load_package(pkg.path), tmp_path / "fresh", opset=None, quantize=False)
    assert fresh.info["reused_package_build"] is False

    compile_model(pkg.path, c=True)
    reused = export(load_package(pkg.path), tmp_path / "reused", opset=None, quantize=False)
    assert reused.info["reused_package_build"] is True
    assert reused.spec["sha256"] == load_package(pkg.path).runtimes["c"]["spec"]["sha256"]

    for out, exported in ((tmp_path / "fresh", fresh), (tmp_path / "reused", reused)):
        assert exported.spec["format"] == "c"
        assert exported.spec["file"] == "model.so"
        assert exported.spec["input_dtype"] == "float64"
        assert {"model.so", "Makefile", "src/header.h", "src/fourfold_trees.c"} <= set(exported.files)
        assert all((out / f).is_file() for f in exported.files)
        runner = load_runner(out, exported.spec, "binary")
        np.testing.assert_allclose(runner.predict_raw(x), native, atol=1e-12)
        runner.row[0] = x[7]
        assert runner.score_row() == pytest.approx(native[7], abs=1e-12)


def test_the_makefile_rebuilds_the_library_from_the_shipped_sources(
    lightgbm_pkg: tuple[ModelPackage, np.ndarray], tmp_path: Path
) -> None:
    pkg, x = lightgbm_pkg
    out = tmp_path / "bundle"
    exported = get_exporter("c")(load_package(pkg.path), out, opset=None, quantize=False)
    (out / "model.so").unlink()
    done = subprocess.run(["make", "-C", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    spec = {k: v for k, v in exported.spec.items() if k != "sha256"}  # a device build is its own binary
    runner = load_runner(out, spec, "binary")
    np.testing.assert_allclose(runner.predict_raw(x), pkg.load_native().predict_raw(x), atol=1e-12)


def test_quantize_is_refused(lightgbm_pkg: tuple[ModelPackage, np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="--quantize is not supported for --format c"):
        get_exporter("c")(lightgbm_pkg[0], tmp_path / "q", opset=None, quantize=True)
    assert not (tmp_path / "q").exists()
