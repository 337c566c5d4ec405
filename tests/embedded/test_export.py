"""fourfold export --format onnx: the gate, the bundle on disk, and the edge runtime reading it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from conftest import FEATURES, build, make_data
from fourfold import ParityError, Predictor, load_package, save_model
from fourfold.edge import BundleError, EdgeInputError, EdgeModel
from fourfold.embedded.export import export_bundle
from fourfold.errors import ConflictError, InputError, InvalidOptionError


def _rf(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0, n_jobs=1).fit(x, y)


def _logreg(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(x, y)


def _onehot_pipeline(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x = x.copy()
    x[:, 3] = np.floor(np.abs(x[:, 3]) * 2).clip(0, 4)  # a category code 0..4
    prep = ColumnTransformer(
        [("num", StandardScaler(), [0, 1, 2, 4]), ("cat", OneHotEncoder(handle_unknown="ignore"), [3])]
    )
    return make_pipeline(prep, LogisticRegression()).fit(x, y)


EXTRA = {"sklearn_rf": _rf, "sklearn_logreg": _logreg, "sklearn_onehot": _onehot_pipeline}


def _package(kind: str, tmp_path: Path) -> tuple[Any, np.ndarray, Any]:
    if kind in EXTRA:
        x, y, _ = make_data()
        if kind == "sklearn_onehot":
            x[:, 3] = np.floor(np.abs(x[:, 3]) * 2).clip(0, 4)
        table = pa.table({name: x[:, i] for i, name in enumerate(FEATURES)})
        if kind == "sklearn_onehot":  # the category code is an integer input
            table = table.set_column(3, FEATURES[3], pa.array(x[:, 3].astype(np.int64)))
        model = EXTRA[kind](x, y)
    else:
        model, x, table = build(kind)
    return save_model(model, tmp_path / kind, name=kind, sample=table), x, table


@pytest.mark.parametrize(
    "kind",
    ["sklearn_gbdt", "sklearn_rf", "sklearn_logreg", "sklearn_pipeline", "sklearn_onehot", "xgboost",
     "lightgbm", "torch_mlp"],
)  # fmt: skip
def test_onnx_bundle_passes_the_gate_and_scores_like_the_predictor(kind: str, tmp_path: Path) -> None:
    pkg, x, table = _package(kind, tmp_path)
    report = export_bundle(pkg.path, "onnx", tmp_path / "edge")
    assert report.verified, report.gate.summary()
    parity = report.gate.parity
    assert parity is not None
    assert parity.groups["sample"].label_flips == 0
    assert parity.groups["boundary_probes"].rows > 0
    manifest = json.loads((tmp_path / "edge" / "edge.json").read_text())
    assert manifest["feature_order"] == list(FEATURES)
    assert manifest["model"]["format"] == "onnx"
    assert manifest["gate"]["passed"] is True
    assert set(manifest["files"]) >= {"model.onnx", "parity.json", "fourfold_edge/checks.py"}

    edge = EdgeModel(tmp_path / "edge")
    want = Predictor(pkg).predict(table)["score"]
    got = edge.predict(x)["score"]
    np.testing.assert_allclose(got, want, atol=1e-4)
    for i in range(5):
        row = {name: float(x[i, j]) for j, name in enumerate(FEATURES)}
        one = edge.predict_one(row)
        assert one["score"] == pytest.approx(float(got[i]), abs=1e-6)
        assert one["label"] == int(got[i] > pkg.threshold)


def test_tree_bundles_are_probed_at_every_split(tmp_path: Path) -> None:
    pkg, _, _ = _package("xgboost", tmp_path)
    report = export_bundle(pkg.path, "onnx", tmp_path / "edge")
    assert report.gate.parity is not None
    assert report.gate.parity.groups["split_probes"].rows > 100


def test_onnx_passthrough(tmp_path: Path) -> None:
    pkg, x, _ = _package("xgboost", tmp_path)
    from fourfold import compile_model

    compile_model(pkg.path)
    import onnx

    proto = onnx.load(str(pkg.path / "onnx" / "model.onnx"))
    onnx_pkg = save_model(proto, tmp_path / "as-onnx", name="as_onnx", sample=pkg.sample(), task="binary")
    report = export_bundle(onnx_pkg.path, "onnx", tmp_path / "edge")
    assert report.verified
    np.testing.assert_allclose(
        EdgeModel(tmp_path / "edge").predict(x)["score"], Predictor(pkg).predict(x)["score"], atol=1e-6
    )


def test_a_float32_threshold_flip_is_refused_with_the_numbers(tmp_path: Path) -> None:
    """A float64 model whose decision turns between two neighbouring float32 values: the ONNX file takes
    float32 input, so rows the sample holds just past the turn flip. The gate refuses, says how much and
    where, and writes nothing."""
    from sklearn.linear_model import LogisticRegression

    x, y, _ = make_data(400)
    model = LogisticRegression().fit(x, y)
    f32 = float(np.float32(0.1))
    model.coef_[:] = 0.0
    model.coef_[0, 0] = 1e10
    model.intercept_[:] = -1e10 * (f32 + 1e-10)  # the decision turns at x0 = float32(0.1) + 1e-10
    x[::2, 0] = f32 + 2e-10  # natively past the turn; as float32 exactly float32(0.1), before it
    table = pa.table({name: x[:, i] for i, name in enumerate(FEATURES)})
    pkg = save_model(model, tmp_path / "flip", name="flip", sample=table)
    out = tmp_path / "edge"
    with pytest.raises(ParityError) as err:
        export_bundle(pkg.path, "onnx", out)
    text = str(err.value)
    assert "no bundle was written" in text
    assert "beyond tolerance" in text
    assert "label flip" in text
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    forced = export_bundle(pkg.path, "onnx", out, force=True)
    assert not forced.verified
    assert json.loads((out / "edge.json").read_text())["gate"]["passed"] is False


def test_a_tampered_bundle_is_refused(tmp_path: Path) -> None:
    pkg, _, _ = _package("sklearn_logreg", tmp_path)
    export_bundle(pkg.path, "onnx", tmp_path / "edge")
    model = tmp_path / "edge" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(BundleError, match=r"model\.onnx was changed"):
        EdgeModel(tmp_path / "edge")
    (tmp_path / "edge" / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx is missing"):
        EdgeModel(tmp_path / "edge")


def test_out_dir_with_the_users_files_is_never_replaced(tmp_path: Path) -> None:
    pkg, _, _ = _package("sklearn_logreg", tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConflictError, match="not an edge bundle"):
        export_bundle(pkg.path, "onnx", out)
    assert (out / "notes.txt").read_text() == "keep me"
    export_bundle(pkg.path, "onnx", tmp_path / "edge")
    export_bundle(pkg.path, "onnx", tmp_path / "edge")  # a bundle fourfold wrote is replaced
    assert EdgeModel(tmp_path / "edge").predict_one(dict.fromkeys(FEATURES, 0.5))["label"] in (0, 1)


def test_edge_errors_match_the_core(tmp_path: Path) -> None:
    pkg, _, _ = _package("xgboost", tmp_path)
    export_bundle(pkg.path, "onnx", tmp_path / "edge")
    from fourfold import compile_model

    compile_model(pkg.path)
    edge, core = EdgeModel(tmp_path / "edge"), Predictor(load_package(pkg.path), runtime="onnx")
    good = dict.fromkeys(FEATURES, 0.25)
    cases = [{**good, "x0": "1.5"}, {**good, "x2": None}, {**good, "x1": float("inf")}, {**good, "x3": True},
             {k: v for k, v in good.items() if k != "x4"}, {**good, "x4": 1e39}, [1, 2]]  # fmt: skip
    for bad in cases:
        with pytest.raises(EdgeInputError) as e1:
            edge.predict_one(bad)  # type: ignore[arg-type]
        with pytest.raises(InputError) as e2:
            core.predict_one(bad)  # type: ignore[arg-type]
        assert str(e1.value) == str(e2.value)


def test_options_are_checked(tmp_path: Path) -> None:

    pkg, _, _ = _package("sklearn_logreg", tmp_path)
    with pytest.raises(InvalidOptionError, match="--format"):
        export_bundle(pkg.path, "tensorrt", tmp_path / "e")
    with pytest.raises(InvalidOptionError, match="--quantize"):
        export_bundle(pkg.path, "onnx", tmp_path / "e", quantize="int4")
    with pytest.raises(InvalidOptionError, match="--opset"):
        export_bundle(pkg.path, "onnx", tmp_path / "e", opset=99)
    assert not (tmp_path / "e").exists()


def test_opset_retarget(tmp_path: Path) -> None:
    pkg, _x, _ = _package("torch_mlp", tmp_path)
    report = export_bundle(pkg.path, "onnx", tmp_path / "edge", opset=17)
    manifest = json.loads((tmp_path / "edge" / "edge.json").read_text())
    assert manifest["export"]["opset"]["ai.onnx"] == 17
    assert report.verified


def test_quantization_is_kept_only_when_it_holds_and_is_faster(tmp_path: Path) -> None:
    pkg, _, _ = _package("torch_mlp", tmp_path)
    report = export_bundle(pkg.path, "onnx", tmp_path / "edge", quantize="dynamic")
    q = report.quantization
    assert "kept" in q
    assert "parity" in q
    files = set(json.loads((tmp_path / "edge" / "edge.json").read_text())["files"])
    assert ("model.int8.onnx" in files) == q["kept"]
    assert ("model.onnx" in files) != q["kept"]
    trees = export_bundle(_package("xgboost", tmp_path)[0].path, "onnx", tmp_path / "t", quantize="dynamic")
    assert trees.quantization["kept"] is False
    assert "nothing to quantize" in trees.quantization["why"]
