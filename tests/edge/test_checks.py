"""The edge runtime's input check says exactly what the core's says, for every value in every slot."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourfold.edge.checks import EdgeInputError
from fourfold.edge.checks import RowCheck as EdgeCheck
from fourfold.errors import InputError
from fourfold.model.check import RowCheck
from fourfold.model.signature import DTYPES, Feature, Signature

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e39, max_value=1e39),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, -1, 0.5, 1.0, 0.0, True, False, None, "1", "", b"1", [1], {"a": 1}, 2**63,
                     -(2**63) - 1, 3.4028235e38, 3.5e38, np.float32(2.5), np.int64(7), np.bool_(True),
                     np.datetime64("2020-01-01"), math.nan]),
)  # fmt: skip

FEATURES = st.lists(st.tuples(st.sampled_from(DTYPES), st.booleans()), min_size=1, max_size=5).map(
    lambda fs: [Feature(f"f{i}", d, n) for i, (d, n) in enumerate(fs)]
)


def _outcome(fn: Any) -> str:
    try:
        out = fn()
    except (EdgeInputError, InputError) as err:
        return f"error: {err}"
    return f"ok: {np.asarray(out).tolist()}"


@settings(max_examples=400, deadline=None)
@given(
    features=FEATURES, data=st.data(), dtype=st.sampled_from([np.float32, np.float64]), strict=st.booleans()
)
def test_one_row_messages_match_the_core(
    features: list[Feature], data: Any, dtype: Any, strict: bool
) -> None:
    sig = Signature.for_task("binary", features)
    row: dict[str, Any] = {}
    for f in features:
        if data.draw(st.integers(0, 9)) > 0:  # now and then a feature is missing
            row[f.name] = data.draw(VALUES)
    if data.draw(st.booleans()):
        row["extra"] = 1.0
    core = RowCheck(sig, dtype, strict=strict, model="model 'm'")
    edge = EdgeCheck([f.to_dict() for f in features], dtype, strict=strict, model="model 'm'")
    buf = np.zeros((1, len(features)), dtype=dtype)
    want = _outcome(lambda: core.one(row))
    got = _outcome(lambda: edge.one_into(row, buf).copy())
    assert got == want


@settings(max_examples=200, deadline=None)
@given(
    features=FEATURES,
    data=st.data(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_array_messages_match_the_core(features: list[Feature], data: Any, dtype: Any) -> None:
    sig = Signature.for_task("binary", features)
    cells = st.one_of(st.floats(), st.sampled_from([0.0, 1.0, 2.0, -3.0, 0.5, 1e39, 2.0**63, 300.0]))
    n = data.draw(st.integers(1, 4))
    x = np.array([[data.draw(cells) for _ in features] for _ in range(n)], dtype=np.float64)
    core = RowCheck(sig, dtype, model="model 'm'")
    edge = EdgeCheck([f.to_dict() for f in features], dtype, model="model 'm'")

    def core_check() -> np.ndarray:
        checked = core.check(x)
        err = checked.error()
        if err is not None:
            raise err
        return checked.x

    assert _outcome(lambda: edge.array(x, dtype)) == _outcome(core_check)


def test_shape_errors_match() -> None:
    sig = Signature.for_task("binary", [Feature("a"), Feature("b")])
    core, edge = RowCheck(sig, np.float32), EdgeCheck([f.to_dict() for f in sig.inputs], np.float32)
    for bad in (np.zeros(3), np.zeros((2, 3)), np.array([["a", "b"]], dtype=object)):
        with pytest.raises(InputError) as e1:
            core.check(bad)
        with pytest.raises(EdgeInputError) as e2:
            edge.array(bad, np.float32)
        assert str(e1.value) == str(e2.value)
