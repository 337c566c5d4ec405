from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FEATURES, build
from fourfold import (
    Feature,
    FeatureTypeError,
    MissingFeatureError,
    NullFeatureError,
    Predictor,
    ShapeError,
    Signature,
    UnknownFeatureError,
    save_model,
)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    model, _, table = build("xgboost")
    path = tmp_path_factory.mktemp("pkg") / "m"
    return Predictor(save_model(model, path, name="fraud", sample=table))


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return build("xgboost")[2].slice(0, 50)


def test_every_batch_type_gives_the_same_scores(predictor: Predictor, table: pa.Table) -> None:
    expected = predictor.predict(table)["score"]
    as_dict = {c: table[c].to_numpy() for c in table.column_names}
    as_lists = {c: table[c].to_pylist() for c in table.column_names}
    matrix = np.column_stack([table[c].to_numpy() for c in FEATURES])
    for batch in (table.to_batches()[0], table.to_pandas(), as_dict, as_lists, matrix):
        np.testing.assert_array_equal(predictor.predict(batch)["score"], expected)
    one = predictor.predict_one({c: float(table[c][3].as_py()) for c in FEATURES})
    assert one["score"] == pytest.approx(float(expected[3]), abs=0)
    assert one["label"] == int(expected[3] > 0.5)


@settings(max_examples=25, deadline=None)
@given(st.permutations(FEATURES), st.lists(st.text(min_size=1, max_size=5), max_size=3))
def test_column_order_and_extra_columns_never_matter(
    predictor: Predictor, table: pa.Table, order: list[str], extras: list[str]
) -> None:
    shuffled = {c: table[c].to_numpy() for c in order}
    for e in extras:
        shuffled.setdefault(f"extra_{e}", np.zeros(table.num_rows))
    np.testing.assert_array_equal(predictor.predict(shuffled)["score"], predictor.predict(table)["score"])


def test_missing_feature_names_it_and_the_expected_list(predictor: Predictor, table: pa.Table) -> None:
    with pytest.raises(
        MissingFeatureError, match=r"feature 'x3' is missing .*model 'fraud' needs: x0, x1, x2, x3"
    ):
        predictor.predict(table.drop_columns(["x3"]))
    with pytest.raises(MissingFeatureError, match="'x1'"):
        predictor.predict_one({"x0": 1.0})


def test_unknown_feature_in_strict_mode(tmp_path: Path, table: pa.Table) -> None:
    model, _, data = build("xgboost")
    strict = Predictor(save_model(model, tmp_path / "m", name="m", sample=data), strict=True)
    with pytest.raises(UnknownFeatureError, match="'surprise'"):
        strict.predict(table.append_column("surprise", pa.array(np.zeros(table.num_rows))))
    with pytest.raises(UnknownFeatureError, match="'surprise'"):
        strict.predict_one({**dict.fromkeys(FEATURES, 0.0), "surprise": 1.0})


def test_wrong_type_names_the_feature(predictor: Predictor, table: pa.Table) -> None:
    bad = table.set_column(1, "x1", pa.array(["a"] * table.num_rows))
    with pytest.raises(
        FeatureTypeError, match="feature 'x1' must be a number, got an Arrow column of type string"
    ):
        predictor.predict(bad)
    with pytest.raises(FeatureTypeError, match="'x2' must be a number, got str 'oops'"):
        predictor.predict_one({**dict.fromkeys(FEATURES, 0.0), "x2": "oops"})
    frame = table.to_pandas()
    frame["x4"] = "z"
    with pytest.raises(FeatureTypeError, match="'x4'"):
        predictor.predict(frame)


def test_nan_where_not_allowed(predictor: Predictor, table: pa.Table) -> None:
    values = table["x2"].to_numpy().copy()
    values[[4, 9]] = np.nan
    with pytest.raises(NullFeatureError, match=r"'x2' is null or NaN in 2 row\(s\) \(row 4, 9\)"):
        predictor.predict(table.set_column(2, "x2", pa.array(values)))
    with pytest.raises(NullFeatureError, match="'x0'"):
        predictor.predict(table.set_column(0, "x0", pa.array([None] * table.num_rows, pa.float64())))
    with pytest.raises(NullFeatureError, match="'x3'"):
        predictor.predict_one({**dict.fromkeys(FEATURES, 0.0), "x3": None})
    with pytest.raises(NullFeatureError, match="'x3'"):
        predictor.predict_one({**dict.fromkeys(FEATURES, 0.0), "x3": float("nan")})


def test_nullable_feature_accepts_missing(tmp_path: Path, table: pa.Table) -> None:
    model, _, _ = build("xgboost")
    sig = Signature.for_task("binary", [Feature(f, nullable=(f == "x2")) for f in FEATURES])
    p = Predictor(save_model(model, tmp_path / "m", name="m", signature=sig))
    out = p.predict(table.set_column(2, "x2", pa.array([None] * table.num_rows, pa.float64())))
    assert np.isfinite(out["score"]).all()
    assert 0 <= p.predict_one({**dict.fromkeys(FEATURES, 0.0), "x2": None})["score"] <= 1


def test_shape_errors(predictor: Predictor) -> None:
    with pytest.raises(ShapeError, match="5 columns"):
        predictor.predict(np.zeros((3, 4)))
    with pytest.raises(ShapeError, match="2-D"):
        predictor.predict(np.zeros(5))
    with pytest.raises(ShapeError, match="'x1'"):
        predictor.predict({f: np.zeros(3 if f != "x1" else 2) for f in FEATURES})


def test_empty_batch(predictor: Predictor, table: pa.Table) -> None:
    out = predictor.predict(table.slice(0, 0))
    assert out["score"].shape == (0,)
    assert out["label"].shape == (0,)


def test_errors_carry_status_and_pickle(predictor: Predictor) -> None:
    import pickle

    with pytest.raises(MissingFeatureError) as info:
        predictor.predict_one({})
    err = pickle.loads(pickle.dumps(info.value))
    assert type(err) is MissingFeatureError
    assert err.status == 422
    assert err.message == info.value.message
    assert err.to_dict()["error"] == "MissingFeatureError"


def test_pandas_nullable_and_inference(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"a": [1.0, None, 3.0], "b": pd.array([1, 2, 3], dtype="int64"), "c": [True, False, True]}
    )
    from fourfold import infer_signature

    sig = infer_signature(frame, task="regression")
    assert [(f.name, f.dtype, f.nullable) for f in sig.inputs] == [
        ("a", "float64", True), ("b", "int64", False), ("c", "bool", False),
    ]  # fmt: skip
    with pytest.raises(FeatureTypeError, match="'s' must be a number, got str 'x'"):
        infer_signature(pd.DataFrame({"s": ["x"]}), task="binary")


def test_infinite_or_out_of_range_values_are_named(predictor: Predictor, table: pa.Table) -> None:
    row = dict.fromkeys(FEATURES, 0.0)
    with pytest.raises(FeatureTypeError, match="'x1' is infinite"):
        predictor.predict_one({**row, "x1": float("inf")})
    values = table["x3"].to_numpy().copy()
    values[2] = -np.inf
    with pytest.raises(FeatureTypeError, match="'x3'"):
        predictor.predict(table.set_column(3, "x3", pa.array(values)))


def test_values_beyond_float32_are_refused_by_a_float32_runtime(tmp_path: Path) -> None:
    import fourfold

    model, _, data = build("xgboost")
    pkg = save_model(model, tmp_path / "m", name="m", sample=data)
    fourfold.compile_model(pkg.path)
    onnx_p = Predictor(fourfold.load_package(pkg.path))
    assert onnx_p.runtime == "onnx"
    with pytest.raises(FeatureTypeError, match="'x2' is beyond the float32 range of the model's input"):
        onnx_p.predict_one({**dict.fromkeys(FEATURES, 0.0), "x2": 1e300})
