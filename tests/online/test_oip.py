from __future__ import annotations

import pytest

from fourfold.model.signature import Feature, Signature
from fourfold.online.oip import OIPError, _tensor, decode_infer, encode_infer

SIG = Signature.for_task("binary", [Feature("a"), Feature("b")])


def _infer(*inputs: dict[str, object], **extra: object) -> dict[str, object]:
    return {"inputs": list(inputs), **extra}


def test_nested_and_flat_data_are_the_same_tensor() -> None:
    nested = decode_infer(
        _infer({"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}), SIG
    )
    flat = decode_infer(_infer({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}), SIG)
    assert nested.rows == flat.rows == 2
    assert nested.batch.tolist() == flat.batch.tolist()  # type: ignore[union-attr]


def test_per_feature_inputs_and_output_selection() -> None:
    req = decode_infer(
        _infer({"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [3, 4]},
               {"name": "a", "shape": [2], "datatype": "BOOL", "data": [True, False]},
               id="42", outputs=[{"name": "label"}]),
        SIG,
    )  # fmt: skip
    assert isinstance(req.batch, dict)
    assert req.batch["b"].tolist() == [3, 4]
    import numpy as np

    out = encode_infer("m", "3", {"score": np.array([0.1, 0.9]), "label": np.array([0, 1])}, req)
    assert out == {"model_name": "m", "model_version": "3", "id": "42",
                   "outputs": [{"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 1]}]}  # fmt: skip  # noqa: E501


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "non-empty list"),
        (_infer({"name": "x", "shape": [3], "datatype": "FP64", "data": [1]}), "needs 3 values, data has 1"),
        (_infer({"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}), "BYTES"),
        (_infer({"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}), "unknown datatype"),
        (_infer({"name": "x", "shape": [1], "datatype": "INT64", "data": [9.3e18]}), "whole numbers"),
        (_infer({"name": "a", "shape": [1], "datatype": "INT64", "data": [1.5]}), "INT64 data must be whole"),
        (_infer({"name": "a", "shape": [1], "datatype": "INT8", "data": [300]}), "INT8 data must be whole"),
        (_infer({"name": "a", "shape": [1], "datatype": "INT64", "data": [True]}), "got True"),
        (_infer({"name": "a", "shape": [1], "datatype": "BOOL", "data": [2]}), "must be true or false"),
        (_infer({"name": "a", "shape": [1], "datatype": "BOOL", "data": [1]}), "must be true or false"),
        (_infer({"name": "a", "shape": [1], "datatype": "FP64", "data": [True]}), "must be numbers"),
        (_infer({"name": "a", "shape": [1], "datatype": "FP64", "data": ["1"]}), "must be numbers"),
        (_infer({"name": "x", "shape": [1], "datatype": {}, "data": [1]}), "datatype must be a string"),
        (_infer({"name": "x", "shape": [1], "datatype": [], "data": [1]}), "datatype must be a string"),
        (_infer({"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "surprise", "shape": [1], "datatype": "FP64", "data": [1]}), "input(s) 'surprise'"),
        (_infer({"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}), "given twice"),
        (_infer({"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}, id=7), "'id' must be a string"),
        (_infer({"name": "x", "shape": [-1], "datatype": "FP64", "data": [1]}), "non-negative"),
        (_infer({"name": "x", "datatype": "FP64", "data": [1]}), "missing shape"),
        (_infer({"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}), "has 3 columns"),
        (_infer({"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2]},
                {"name": "b", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]}), "has 3 rows"),
        (_infer({"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}, outputs=[{"name": "nope"}]),
         "unknown output"),
    ],
)  # fmt: skip
def test_protocol_errors_are_400_and_named(body: dict[str, object], needle: str) -> None:
    with pytest.raises(OIPError, match=needle.replace("(", r"\(").replace(")", r"\)")) as info:
        decode_infer(body, SIG)
    assert info.value.status == 400


def test_a_shape_numpy_cannot_hold_is_refused_even_with_a_zero_dimension() -> None:
    # the element count is 0 (it matches the empty data), but the other dimensions overflow numpy
    shape = [211530, 0, 868, 1545737, 1188, 359, 236823118, 2830, 276, 5131184, 311070]
    with pytest.raises(OIPError, match="beyond any tensor"):
        _tensor({"name": "x", "shape": shape, "datatype": "FP64", "data": []}, 0)
