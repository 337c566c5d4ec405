"""The assembly rule's fast field test agrees with ``check_fields``, and survives a copy to a worker."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from fourfold.errors import InputError
from fourfold.features.assemble import Assembly
from fourfold.features.definitions import FeatureSet

FS = FeatureSet.from_dict(
    {
        "name": "fraud",
        "entities": [{"name": "user", "join_key": "user_id"}],
        "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
        "features": [
            {"name": "amount", "request": "amount"},
            {"name": "n_10m", "source": "tx", "agg": "count", "window": "10m"},
            {"name": "sum_1h", "source": "tx", "agg": "sum", "column": "amount", "window": "1h"},
            {"name": "tier", "entity": "user"},
        ],
    }
)
MODEL = ["amount", "n_10m", "sum_1h", "tier", "plain"]  # "plain": a model input outside the feature set
NAMES = ["user_id", "ts", "amount", "n_10m", "sum_1h", "tier", "plain", "other"]


def passes(assembly: Assembly, event: dict[str, object]) -> bool:
    try:
        assembly.check_fields(event, where="the event", unknown=False)
    except InputError:
        return False
    return True


@given(st.sets(st.sampled_from(NAMES)))
def test_accepts_is_check_fields_without_the_message(names: set[str]) -> None:
    assembly = Assembly(MODEL, FS)
    event = dict.fromkeys(names, 1.0)
    assert assembly.accepts(event) == passes(assembly, event)


def test_a_pickled_assembly_compiles_its_test_again() -> None:
    copy = pickle.loads(pickle.dumps(Assembly(MODEL, FS)))
    assert copy.accepts({"user_id": "u1", "amount": 1.0, "plain": 2.0})
    assert not copy.accepts({"user_id": "u1", "amount": 1.0, "plain": 2.0, "n_10m": 3.0})  # computed
    assert not copy.accepts({"user_id": "u1", "plain": 2.0})  # amount missing
