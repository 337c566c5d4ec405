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


# -- the one check: every rule, the same reason whatever the batch --------------------------------------
from fourfold import InputError  # noqa: E402
from fourfold.model.check import F32_OVERFLOW, RowCheck  # noqa: E402
from fourfold.model.expressions import json_schema  # noqa: E402

MIXED = Signature.for_task(
    "binary",
    [Feature("f"), Feature("n", nullable=True), Feature("i", "int8"), Feature("b", "bool"),
     Feature("w", "int64")],
)  # fmt: skip


def test_booleans_are_not_numbers(predictor: Predictor, table: pa.Table) -> None:
    row = dict.fromkeys(FEATURES, 0.0)
    with pytest.raises(FeatureTypeError, match="feature 'x1' must be a number, got bool True"):
        predictor.predict_one({**row, "x1": True})
    with pytest.raises(FeatureTypeError, match="feature 'x1' must be a number, got bool"):
        predictor.predict_one({**row, "x1": np.True_})
    with pytest.raises(FeatureTypeError, match="'x0' must be a number, got an Arrow column of type bool"):
        predictor.predict(table.set_column(0, "x0", pa.array([True] * table.num_rows)))
    with pytest.raises(FeatureTypeError, match="'x0' must be a number, got a boolean array"):
        predictor.predict({**{c: table[c].to_numpy() for c in FEATURES}, "x0": np.ones(table.num_rows, bool)})
    with pytest.raises(FeatureTypeError, match="'x0' must be a number, got bool False"):
        predictor.predict({**{c: table[c].to_pylist() for c in FEATURES}, "x0": [False] * table.num_rows})


def test_predict_one_wants_a_mapping(predictor: Predictor) -> None:
    for bad in ([1, 2, 3], (1.0,), "x0=1", None, 3.0):
        with pytest.raises(InputError, match="a row must be a mapping of feature name to value"):
            predictor.predict_one(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"f": None}, "feature 'f' is null or NaN"),
        ({"f": float("nan")}, "feature 'f' is null or NaN"),
        ({"n": float("inf")}, "feature 'n' is infinite (or beyond the float64 range)"),
        ({"i": 1.5}, "feature 'i' must be a whole number in [-128, 127]"),
        ({"i": 128}, "feature 'i' must be a whole number in [-128, 127]"),
        ({"b": 2}, "feature 'b' must be 0 or 1 (a boolean)"),
        ({"b": "yes"}, "feature 'b' must be 0 or 1, got str 'yes'"),
        ({"f": "1.5"}, "feature 'f' must be a number, got str '1.5'"),
        ({"w": 2.0**64}, "feature 'w' must be a whole number in [-9223372036854775808, 9223372036854775807]"),
        ({"f": None, "i": 1.5}, "feature 'f' is null or NaN"),  # the first feature's first rule wins
    ],
)
def test_each_rule_gives_one_reason_everywhere(change: dict[str, object], reason: str) -> None:
    check = RowCheck(MIXED, np.float64)
    good = {"f": 1.0, "n": None, "i": -128, "b": True, "w": 2**62}
    row = {**good, **change}
    assert check.check_rows([good, row]).reason(1) == reason
    with pytest.raises(InputError) as err:
        check.one(row)
    assert reason in err.value.message
    if all(not isinstance(v, str) for v in row.values()):  # a column holds one type: text is refused whole
        columns = {k: [good[k], row[k]] for k in good}
        assert check.check(columns).reason(1) == reason
        table = pa.table(
            {k: pa.array([np.nan if v is None else float(v) for v in vals]) for k, vals in columns.items()}
        )
        assert check.check(table).reason(1) == reason
        assert check.check(table.to_pandas()).reason(1) == reason


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-4e38, max_value=4e38),
    st.sampled_from([F32_OVERFLOW, -F32_OVERFLOW, float(np.nextafter(F32_OVERFLOW, 0)), 2.0**63,
                     -(2.0**63), 127.0, 128.0, -129.0, 0.5, 1.0, 0.0]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.none(),
    st.booleans(),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(dict.fromkeys(("f", "n", "i", "b", "w"), values)),
    st.sampled_from([np.float64, np.float32]),
)
def test_the_one_row_path_agrees_with_the_vectorized_rules(row: dict[str, object], dtype: type) -> None:
    """``one`` decides "clean" on its own (no arrays for a good row): it must accept exactly the rows the
    vectorized rules accept, with the same matrix, and refuse the others with the same reason."""
    check = RowCheck(MIXED, dtype)
    checked = check.check_rows([row])
    if not checked.ok[0]:
        with pytest.raises(InputError) as err:
            check.one(row)
        assert err.value.message == checked.reason(0)
        return
    x = check.one(row)
    np.testing.assert_array_equal(x, checked.x)
    assert x.dtype == np.dtype(dtype)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(dict.fromkeys(("f", "n", "i", "b", "w"), values)),
    st.sampled_from([np.float64, np.float32]),
)
def test_the_openapi_bounds_are_the_check(row: dict[str, object], dtype: type) -> None:
    """A value the JSON Schema of its feature accepts is a value the check accepts, and the other way."""
    import jsonschema

    check = RowCheck(MIXED, dtype)
    for f in MIXED.inputs:
        value = row[f.name]
        if isinstance(value, float) and not np.isfinite(value):
            continue  # JSON has no NaN or infinity
        valid = jsonschema.Draft202012Validator(json_schema(check, f)).is_valid(value)
        base: dict[str, object] = {"f": 1.0, "n": None, "i": 0, "b": False, "w": 0}
        accepted = check.check_rows([{**base, f.name: value}]).ok[0]
        assert valid == accepted, (f, value, json_schema(check, f))
