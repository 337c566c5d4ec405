from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import build, native_scores
from fourfold import ParityError, Predictor, compile_model, load_package, save_model
from fourfold.model.parity import tree_splits

KINDS = ["sklearn_gbdt", "sklearn_pipeline", "xgboost", "lightgbm", "torch_mlp"]


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_conversion_passes_parity(kind: str, tmp_path: Path) -> None:
    model, x, table = build(kind)
    pkg = save_model(model, tmp_path / kind, name=kind, sample=table)
    report = compile_model(pkg.path)
    assert report.passed, report.summary()
    assert report.max_abs_diff <= 1e-5
    assert report.groups["sample"].label_flips == 0  # at the boundary probes a 1e-8 difference may flip
    assert report.groups["boundary_probes"].rows > 0

    loaded = load_package(pkg.path)  # the ONNX file is hashed into the manifest too
    info = loaded.runtimes["onnx"]
    assert info["verified"] is True
    assert all(info[k] for k in ("converter", "converter_version", "onnxruntime_version"))
    assert info["opset"]
    assert info["parity"]["passed"] is True
    assert "onnx/model.onnx" in loaded.manifest["files"]

    onnx_p = Predictor(loaded)
    assert onnx_p.runtime == "onnx"
    np.testing.assert_allclose(onnx_p.predict(table)["score"], native_scores(kind, model, x), atol=1e-5)
    assert Predictor(loaded, runtime="native").runtime == "native"


def test_tree_models_get_split_probes(tmp_path: Path) -> None:
    model, _, table = build("xgboost")
    report = compile_model(save_model(model, tmp_path / "m", name="m", sample=table).path)
    assert report.groups["split_probes"].rows > 100


def test_lightgbm_thresholds_rounded_to_agree_with_float64_splits(tmp_path: Path) -> None:
    import onnx

    model, _, table = build("lightgbm")
    pkg = save_model(model, tmp_path / "m", name="m", sample=table)
    compile_model(pkg.path)
    splits = tree_splits(onnx.load(pkg.path / "onnx" / "model.onnx"))
    native = _lgb_splits(model.booster_.dump_model())
    for feat, thr in splits:  # every ONNX threshold is the largest float32 not above LightGBM's float64 one
        low = float(np.float32(thr))
        high = float(np.nextafter(np.float32(thr), np.float32(np.inf)))
        assert any(f == feat and low <= t < high for f, t in native), (feat, thr)


def _lgb_splits(dump: dict) -> list[tuple[int, float]]:  # type: ignore[type-arg]
    out: list[tuple[int, float]] = []

    def walk(node: dict) -> None:  # type: ignore[type-arg]
        if "split_feature" in node:
            out.append((node["split_feature"], node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump["tree_info"]:
        walk(tree["tree_structure"])
    return out


def _far_from_zero_model(tmp_path: Path) -> Path:
    # A timestamp-like feature near 1e9: float32 cannot resolve it, so an ONNX (float32) graph of a
    # linear model disagrees with scikit-learn's float64 arithmetic.
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    ts = 1.7e9 + rng.uniform(0, 100, 400)
    y = (ts > 1.7e9 + 50).astype(int)
    model = LogisticRegression(C=1e6, max_iter=1000).fit(np.c_[ts - 1.7e9], y)
    # move the intercept so the model takes raw timestamps
    model.intercept_ = model.intercept_ - model.coef_[0] * 1.7e9
    table = pa.table({"ts": ts})
    return save_model(model, tmp_path / "far", name="far", sample=table).path


def test_parity_failure_is_refused_with_the_size_of_the_failure(tmp_path: Path) -> None:
    path = _far_from_zero_model(tmp_path)
    with pytest.raises(
        ParityError, match=r"fails parity and was not stored: parity FAILED: max \|diff\| [0-9.e-]+"
    ):
        compile_model(path)
    assert not (path / "onnx").exists()
    assert "onnx" not in load_package(path).runtimes
    assert Predictor(load_package(path)).runtime == "native"


def test_forced_conversion_is_stored_unverified(tmp_path: Path) -> None:
    path = _far_from_zero_model(tmp_path)
    report = compile_model(path, force=True)
    assert not report.passed
    assert report.beyond_tolerance > 0
    pkg = load_package(path)
    assert pkg.runtimes["onnx"]["verified"] is False
    assert Predictor(pkg).runtime == "native"  # auto never picks an unverified runtime
    assert Predictor(pkg, runtime="onnx").runtime == "onnx"


def test_onnx_flavor_package(tmp_path: Path) -> None:
    model, x, table = build("xgboost")
    src = save_model(model, tmp_path / "xgb", name="xgb", sample=table)
    compile_model(src.path)
    pkg = save_model(src.path / "onnx" / "model.onnx", tmp_path / "onnx", name="onnx-model", sample=table)
    assert pkg.flavor == "onnx"
    p = Predictor(load_package(pkg.path))
    np.testing.assert_allclose(p.predict(table)["score"], model.predict_proba(x)[:, 1], atol=1e-5)
