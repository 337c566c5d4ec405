"""Compiled trees: the C library of each tree flavor agrees with its native model (sample, split and
boundary probes, missing values), its entries behave, and every runtime choice around it holds."""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from conftest import FEATURES, build, make_data
from fourfold import (
    MissingExtraError,
    ParityError,
    Predictor,
    TamperedPackageError,
    UnsupportedModelError,
    compile_model,
    load_package,
    save_model,
)
from fourfold.edge.c_runner import CRunner, ForeignLibraryError
from fourfold.errors import ConflictError, MissingToolError
from fourfold.model.ctrees import build_c
from fourfold.model.package import sha256_file, write_manifest


def _random_forest(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=20, max_depth=3, random_state=0, n_jobs=1).fit(x, y)


def _xgboost_multiclass(x: np.ndarray, y: np.ndarray) -> Any:
    import xgboost as xgb

    classes = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5])  # three classes
    return xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1, random_state=0).fit(x, classes)


def _extra_trees_regression(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.ensemble import ExtraTreesRegressor

    target = x[:, 0] * 2 - x[:, 1] ** 2 + np.sin(x[:, 2])
    return ExtraTreesRegressor(n_estimators=20, max_depth=3, random_state=0, n_jobs=1).fit(x, target)


EXTRA: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {
    "random_forest": _random_forest,
    "xgboost_multiclass": _xgboost_multiclass,
    "extra_trees_regression": _extra_trees_regression,
}
KINDS = ["xgboost", "lightgbm", "sklearn_gbdt", *EXTRA]
TASKS = {"xgboost_multiclass": "multiclass", "extra_trees_regression": "regression"}


def _model(kind: str) -> tuple[Any, np.ndarray, pa.Table]:
    if kind in EXTRA:
        x, y, table = make_data()
        return EXTRA[kind](x, y), x, table
    return build(kind)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any, np.ndarray]]:
    """Each kind saved and compiled with ``c=True`` once (a few seconds of C compiles for the module)."""
    out = {}
    for kind in KINDS:
        model, x, table = _model(kind)
        pkg = save_model(
            model, tmp_path_factory.mktemp(kind) / kind, name=kind.replace("_", "-"), sample=table
        )
        compile_model(pkg.path, c=True)
        out[kind] = (pkg.path, model, x)
    return out


def _native(path: Path, x: np.ndarray) -> np.ndarray:
    return np.asarray(load_package(path).load_native().predict_raw(x))


@pytest.mark.parametrize("kind", KINDS)
def test_the_c_library_passes_the_parity_gate(kind: str, compiled: dict[str, Any]) -> None:
    path, _, x = compiled[kind]
    pkg = load_package(path)  # every C file is hashed into the manifest, so this verifies them
    info = pkg.runtimes["c"]
    parity = info["parity"]
    assert info["verified"] is True
    assert parity["passed"] is True
    assert parity["label_flips"] == 0
    assert parity["max_abs_diff"] <= (1e-4 if info["input_dtype"] == "float32" else 1e-5), parity
    assert parity["groups"]["split_probes"]["rows"] > 50
    if pkg.signature.task == "binary":
        assert parity["groups"]["boundary_probes"]["rows"] > 0
    assert pkg.signature.task == TASKS.get(kind, "binary")
    for rel in (
        "c/model.so",
        "c/Makefile",
        "c/src/header.h",
        "c/src/fourfold_trees.c",
        "c/src/fourfold_trees.h",
    ):
        assert pkg.manifest["files"][rel] == sha256_file(path / rel)
    assert info["tl2cgen_version"]
    assert info["treelite_version"]
    assert info["compiler"]["version"]
    assert info["spec"]["sha256"] == pkg.manifest["files"]["c/model.so"]
    assert "c" in pkg.manifest["serving"]["measured"]

    p = Predictor(pkg, runtime="c")
    assert p.runtime == "c"
    out = p.predict(x[:300])
    raw = out["probabilities"] if kind == "xgboost_multiclass" else out.get("score", out.get("value"))
    np.testing.assert_allclose(raw, _native(path, x[:300]), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_missing_values_go_where_the_native_model_sends_them(kind: str, tmp_path: Path) -> None:
    # trained with NaNs (learned default directions) and scored with NaNs in every feature
    x, y, _ = make_data()
    rng = np.random.default_rng(3)
    x_nan = np.where(rng.random(x.shape) < 0.15, np.nan, x)
    model = build(kind)[0].fit(x_nan, y)
    names = {f"x{i}": x[:, i] for i in range(x.shape[1])}
    pkg = save_model(model, tmp_path / "m", name="m", sample=pa.table(names))
    record = build_c(pkg, tmp_path / "c")
    runner = CRunner(tmp_path / "c", record["spec"], "binary")
    probe = np.where(rng.random(x.shape) < 0.3, np.nan, x)
    diff = np.abs(runner.predict_raw(probe) - _native(pkg.path, probe))
    assert diff.max() <= 1e-6, diff.max()


def test_lightgbm_without_missing_values_in_training_scores_nan_as_lightgbm_does(
    compiled: dict[str, Any],
) -> None:
    path, _, x = compiled["lightgbm"]  # trained without NaN: LightGBM reads a NaN as 0.0
    runner = _runner(path)
    probe = x.copy()
    probe[::2, 0] = np.nan
    probe[1::3, 1] = np.nan
    np.testing.assert_allclose(runner.predict_raw(probe), _native(path, probe), atol=1e-12)


def test_a_double_whose_low_word_is_all_ones_is_a_value_not_missing(compiled: dict[str, Any]) -> None:
    # tl2cgen's test for missing reads the int overlaying the double's low half; fourfold rewrites it
    assert struct.unpack("<d", struct.pack("<Q", 0x3FF00000FFFFFFFF))[0] == pytest.approx(1.0, abs=1e-6)
    path, _, x = compiled["lightgbm"]
    runner = _runner(path)
    assert load_package(path).runtimes["c"]["missing_tests_patched"] > 0
    probe = (x.view(np.uint64) | np.uint64(0xFFFFFFFF)).view(np.float64)
    assert np.isfinite(probe).all()
    np.testing.assert_allclose(runner.predict_raw(probe), _native(path, probe), atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_score_row_equals_predict_raw_and_the_result_is_zeroed_each_call(
    kind: str, compiled: dict[str, Any]
) -> None:
    path, _, x = compiled[kind]
    runner = _runner(path)
    batch = runner.predict_raw(x[:40])
    np.testing.assert_array_equal(runner.predict_raw(x[:40]), batch)  # the same again: nothing accumulates
    for i in range(40):
        runner.row[0] = x[i]
        first, second = runner.score_row(), runner.score_row()
        np.testing.assert_array_equal(first, batch[i])
        np.testing.assert_array_equal(second, first)
    if kind == "xgboost_multiclass":
        assert batch.shape == (40, 3)
        assert np.allclose(batch.sum(axis=1), 1)
    else:
        assert batch.shape == (40,)
        assert isinstance(first, float)


def test_auto_serves_c_when_measured_fastest_and_falls_back_when_built_elsewhere(
    compiled: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    path = tmp_path / "pkg"
    shutil.copytree(compiled["xgboost"][0], path)
    manifest = load_package(path).manifest
    manifest["serving"] = manifest["serving"] | {"runtime": "c", "order": ["c", "onnx", "native"]}
    write_manifest(path, manifest)
    assert Predictor(load_package(path)).runtime == "c"

    manifest["runtimes"]["c"]["spec"]["machine"] = "riscv128"  # as if built on another machine
    write_manifest(path, manifest)
    pkg = load_package(path)
    assert Predictor(pkg).runtime == "onnx"
    with pytest.raises(ConflictError, match=r"built for \w+/riscv128"):
        Predictor(pkg, runtime="c")


def test_a_tampered_library_is_refused(compiled: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "pkg"
    shutil.copytree(compiled["lightgbm"][0], path)
    spec = load_package(path).runtimes["c"]["spec"]
    lib = path / "c" / "model.so"
    lib.write_bytes(lib.read_bytes() + b"\0")
    with pytest.raises(TamperedPackageError, match=r"c/model.so"):
        load_package(path)
    with pytest.raises(ForeignLibraryError, match="sha256"):
        CRunner(path / "c", spec, "binary")


def test_refusals_name_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, table = build("sklearn_pipeline")
    pipe = save_model(model, tmp_path / "pipe", name="pipe", sample=table)
    with pytest.raises(UnsupportedModelError, match="Pipeline"):
        compile_model(pipe.path, c=True)
    assert not (pipe.path / "c").exists()

    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "xgb", name="xgb", sample=table)
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(MissingToolError, match="no-such-compiler-here"):
        compile_model(pkg.path, c=True)
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match="needs a C compiler"):
        build_c(pkg, tmp_path / "c")
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "tl2cgen", None)  # as if the trees extra were not installed
    with pytest.raises(MissingExtraError, match=r"fourfold\[trees\]"):
        compile_model(pkg.path, c=True)
    assert "c" not in load_package(pkg.path).runtimes
    assert not (pkg.path / "c").exists()


def test_a_library_that_fails_parity_is_not_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fourfold.model import ctrees_wrapper

    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "m", name="m", sample=table)
    wrong = ctrees_wrapper._SOURCE.replace("predict(entry, 0, result);", "predict(entry, 1, result);")
    monkeypatch.setattr(ctrees_wrapper, "_SOURCE", wrong)  # margins instead of probabilities
    with pytest.raises(ParityError, match="C library fails parity"):
        compile_model(pkg.path, c=True)
    after = load_package(pkg.path)
    assert "c" not in after.runtimes
    assert not (pkg.path / "c").exists()
    assert not any(p.name.startswith(".c") for p in pkg.path.iterdir())


def test_features_in_the_signature_order(compiled: dict[str, Any]) -> None:
    path, _, x = compiled["sklearn_gbdt"]
    p = Predictor(load_package(path), runtime="c")
    rows = [dict(zip(FEATURES, map(float, r), strict=True)) for r in x[:5]]
    one = [p.predict_one(r)["score"] for r in rows]
    np.testing.assert_allclose(one, _native(path, x[:5]), atol=1e-12)


def _runner(path: Path) -> CRunner:
    pkg = load_package(path)
    info = pkg.runtimes["c"]
    return CRunner(path / info["dir"], info["spec"], pkg.signature.task)
