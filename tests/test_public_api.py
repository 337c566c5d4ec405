from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fourfold
from fourfold import Feature, MissingExtraError, Signature
from fourfold.extras import require
from fourfold.model.signature import DTYPES


def test_all_names_exist_and_are_sorted() -> None:
    assert sorted(fourfold.__all__) == fourfold.__all__
    for name in fourfold.__all__:
        assert hasattr(fourfold, name), name


def test_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'fourfold\[onnx\]'") as info:
        require("onnxruntime", "onnx", "running a model with ONNX Runtime")
    assert info.value.status == 501
    assert "running a model with ONNX Runtime needs the 'onnxruntime' package" in info.value.message


names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=12)


@given(
    st.lists(
        st.tuples(names, st.sampled_from(DTYPES), st.booleans()),
        min_size=1,
        max_size=8,
        unique_by=lambda t: t[0],
    ),
    st.sampled_from(["binary", "multiclass", "regression"]),
)
def test_signature_round_trips_through_its_dict(features: list[tuple[str, str, bool]], task: str) -> None:
    sig = Signature.for_task(task, [Feature(*f) for f in features], classes=(0, 1, 2))  # type: ignore[arg-type]
    again = Signature.from_dict(sig.to_dict())
    assert again == sig
    assert again.feature_names == tuple(f[0] for f in features)
    assert all(again.index(n) == i for i, n in enumerate(again.feature_names))


def test_signature_rejects_bad_definitions() -> None:
    with pytest.raises(ValueError, match="duplicate feature name"):
        Signature.for_task("binary", [Feature("a"), Feature("a")])
    with pytest.raises(ValueError, match="dtype 'str'"):
        Feature("a", "str")
    with pytest.raises(ValueError, match="at least one input"):
        Signature.for_task("binary", [])
