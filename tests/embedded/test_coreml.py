"""--format coreml: XGBoost with its fitted base margin restored (held to XGBoost by evaluating the written
spec in NumPy), PyTorch as an unverified ML program, scikit-learn refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb

from fourfold.embedded import coreml_target
from fourfold.embedded.coreml_trees import ensemble_of, evaluate
from fourfold.embedded.targets import Exported, get_exporter
from fourfold.errors import ConversionError, UnsupportedModelError
from fourfold.model.package import ModelPackage, save_model
from mlps import rows, save_sklearn, save_torch, sklearn_mlp, torch_mlp


def _export(pkg: ModelPackage, out: Path) -> Exported:
    out.mkdir()
    return get_exporter("coreml")(pkg, out, opset=None, quantize=None)


def _xgb(tmp_path: Path, task: str, **params: Any) -> ModelPackage:
    x = rows(0, 300)
    if task == "regression":
        y: np.ndarray = x[:, 0] * 3 + 7  # far from the converter's hard-coded 0.5
        model: Any = xgb.XGBRegressor(n_estimators=8, max_depth=3, n_jobs=1, **params)
    else:
        y = (x[:, 0] + x[:, 1] > 1.2).astype(int)  # unbalanced: base_score far from 0.5
        if task == "multiclass":
            y = y + (x[:, 2] > 1.0)
        model = xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1, **params)
    x[::17, 3] = np.nan  # some missing values in training: both directions get used
    model.fit(x, y)
    table = pa.table({f"x{i}": x[:64, i] for i in range(x.shape[1])})
    return save_model(model, tmp_path / f"xgb-{task}", name="trees", sample=table)


def _spec(path: Path) -> Any:
    import coremltools as ct

    return ct.utils.load_spec(str(path))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_xgboost_base_margin_is_restored_and_the_file_matches_xgboost(tmp_path: Path, task: str) -> None:
    pkg = _xgb(tmp_path, task)
    exported = _export(pkg, tmp_path / "out")
    assert exported.files == ("model.mlmodel",)
    assert exported.spec["runner"] is None
    assert "only on macOS" in exported.info["unverified"]
    margin = exported.info["base_margin"]
    assert margin["corrected"]
    assert margin["converter_wrote"] != margin["fitted"]

    spec = _spec(tmp_path / "out" / "model.mlmodel")  # what was written, read back
    assert list(ensemble_of(spec)[0].basePredictionValue) == pytest.approx(margin["fitted"])
    x = rows(7, 400)
    x[::9, 3] = np.nan
    native = pkg.load_native().predict_raw(x)
    ours = evaluate(spec, x)
    ours = ours if task == "multiclass" else ours.reshape(len(x))
    assert np.abs(ours - native).max() < 1e-5

    # the converter's own base: the silent shift this target exists to undo
    del ensemble_of(spec)[0].basePredictionValue[:]
    ensemble_of(spec)[0].basePredictionValue.extend(margin["converter_wrote"])
    shifted = evaluate(spec, x)
    shifted = shifted if task == "multiclass" else shifted.reshape(len(x))
    assert np.abs(shifted - native).max() > 1e-3


def test_the_fitted_margin_is_the_one_xgboost_starts_from(tmp_path: Path) -> None:
    pkg = _xgb(tmp_path, "binary")
    booster = pkg.load_native().booster  # type: ignore[attr-defined]
    (margin,) = coreml_target.fitted_base_margin(json.loads(booster.save_config()), 2)
    p = float(json.loads(booster.save_config())["learner"]["learner_model_param"]["base_score"].strip("[]"))
    assert margin == pytest.approx(np.log(p / (1 - p)))
    assert abs(margin) > 0.3  # fitted on unbalanced labels: far from the converter's 0


def test_a_conversion_that_still_disagrees_is_refused_and_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = _xgb(tmp_path, "binary")
    monkeypatch.setattr(coreml_target, "fitted_base_margin", lambda config, n: [0.0])  # the converter's base
    with pytest.raises(ConversionError, match=r"still differs from XGBoost by up to"):
        _export(pkg, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_objectives_without_a_core_ml_equivalent_are_refused(tmp_path: Path) -> None:
    x = rows(0, 200)
    model = xgb.XGBRegressor(n_estimators=3, max_depth=2, n_jobs=1, objective="count:poisson")
    model.fit(x, np.floor(np.abs(x[:, 0]) * 3))
    pkg = save_model(
        model, tmp_path / "poisson", name="p", sample=pa.table({f"x{i}": x[:, i] for i in range(6)})
    )
    with pytest.raises(
        UnsupportedModelError, match=r"'count:poisson' has no Core ML equivalent.*binary:logistic"
    ):
        _export(pkg, tmp_path / "out")
    forest = _xgb(tmp_path, "binary", num_parallel_tree=3)
    with pytest.raises(UnsupportedModelError, match="num_parallel_tree = 1"):
        _export(forest, tmp_path / "out2")


def test_torch_converts_to_an_unverified_ml_program(tmp_path: Path) -> None:
    pkg = save_torch(torch_mlp("multiclass"), tmp_path / "pkg", "multiclass")
    exported = _export(pkg, tmp_path / "out")
    assert exported.spec["format"] == "coreml"
    assert exported.spec["runner"] is None
    assert "not compared with PyTorch" in exported.info["unverified"]
    assert "model.mlpackage/Manifest.json" in exported.files
    assert all((tmp_path / "out" / f).is_file() for f in exported.files)
    assert any(f.endswith("weight.bin") for f in exported.files)


def test_sklearn_is_refused_with_the_coremltools_restriction(tmp_path: Path) -> None:
    pkg = save_sklearn(sklearn_mlp("binary"), tmp_path / "skl")
    with pytest.raises(
        UnsupportedModelError, match=r"disables its scikit-learn converter for scikit-learn > 1\.5\.1"
    ):
        _export(pkg, tmp_path / "out")
