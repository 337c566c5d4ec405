"""Online reads "as of now" equal the incremental engine at that time, on every store backend."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from fourfold import InputError
from fourfold.features import FeatureSet, IncrementalEngine, Scored
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import OnlineStore
from pit import feature_set


def _log(n: int = 2000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 3000, n)) - rng.integers(0, 120, n) * (rng.random(n) < 0.15)
    return pa.table(
        {
            "user_id": rng.choice([f"u{i}" for i in range(30)], n),
            "ts": ts,
            "amount": rng.lognormal(2, 1, n),
            "merchant": rng.choice(["a", "b", "c", "d"], n),
        }
    )


def _with_entity_feature(fs: FeatureSet) -> FeatureSet:
    d = fs.to_dict()
    d["features"].append({"name": "risk_tier", "entity": "user", "default": -1.0})
    return FeatureSet.from_dict(d)


def _assert_rows_equal(got: dict[str, float], want: dict[str, float]) -> None:
    for name, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(value, rel=1e-12), name


@pytest.mark.parametrize("at", [2999, 3000, 3050, 3100, 3300, 10_000])
def test_materialized_state_reads_as_the_engine_would(store: OnlineStore, namespace: str, at: int) -> None:
    fs = FeatureSet.from_dict({**feature_set("100ms").to_dict(), "name": namespace})
    log = _log()
    online = OnlineFeatures(fs, store)
    report = online.materialize(log)
    assert report.entities == 30
    assert report.late > 0

    engine = IncrementalEngine(fs)
    for row in log.to_pylist():
        engine.process(row)
    keys = sorted(engine.keys(), key=str)
    got = online.get([str(k) for k in keys], at_ms=at)
    for key, row in zip(keys, got, strict=True):
        assert row is not None
        _assert_rows_equal(row, engine.read(key, at))
    assert online.get(["nobody"], at_ms=at) == [None]


def test_windows_age_with_time_not_with_events(store: OnlineStore, namespace: str) -> None:
    fs = FeatureSet.from_dict({**feature_set().to_dict(), "name": namespace})
    online = OnlineFeatures(fs, store)
    online.materialize(pa.table({"user_id": ["u"] * 3, "ts": [0, 10, 20], "amount": [1.0, 2.0, 4.0],
                                 "merchant": ["a", "b", "a"]}))  # fmt: skip
    [now] = online.get(["u"], at_ms=50)
    assert now is not None
    assert (now["n_100"], now["sum_100"], now["merchants_150"]) == (3, 7.0, 2)
    [later] = online.get(["u"], at_ms=111)  # 0 and 10 have left the 100 ms window
    assert later is not None
    assert (later["n_100"], later["sum_100"], later["last_100"]) == (1, 4.0, 4.0)
    [gone] = online.get(["u"], at_ms=500)
    assert gone is not None
    assert gone["n_100"] == 0
    assert math.isnan(gone["mean_300"])


def test_update_scores_against_stored_state_and_writes_it_back(store: OnlineStore, namespace: str) -> None:
    fs = FeatureSet.from_dict({**feature_set("50ms").to_dict(), "name": namespace})
    log = _log(600, seed=2)
    head, tail = log.slice(0, 300), log.slice(300)
    online = OnlineFeatures(fs, store)
    online.materialize(head)
    engine = IncrementalEngine(fs)
    for row in head.to_pylist():
        engine.process(row)
    for row in tail.to_pylist():  # the streaming + online hybrid, event by event through the store
        want, got = engine.process(row), online.update(row)
        assert type(got) is type(want)
        if isinstance(want, Scored):
            assert isinstance(got, Scored)
            _assert_rows_equal(got.values, want.values)
    for key in list(engine.keys()):
        [row] = online.get([str(key)], at_ms=5000)
        assert row is not None
        _assert_rows_equal(row, engine.read(key, 5000))


def test_entity_features_and_defaults(store: OnlineStore, namespace: str) -> None:
    fs = _with_entity_feature(FeatureSet.from_dict({**feature_set().to_dict(), "name": namespace}))
    online = OnlineFeatures(fs, store)
    online.materialize(
        pa.table({"user_id": ["a", "b"], "ts": [1, 2], "amount": [1.0, 2.0], "merchant": ["x", "y"]})
    )
    stale = online.write_entity_features(pa.table({"user_id": ["a"], "risk_tier": [3.0]}), event_time_ms=10)
    assert stale == []
    a, b = online.get(["a", "b"], at_ms=50)
    assert a is not None
    assert b is not None
    assert a["risk_tier"] == 3.0
    assert b["risk_tier"] == -1.0  # not written for b: the feature set's default
    assert a["n_100"] == 1  # its one event, at t=1
    # the state's clock (event time 2) and the batch job's (10) are separate: a later event still lands
    assert isinstance(online.update({"user_id": "b", "ts": 5, "amount": 1.0, "merchant": "x"}), Scored)
    [b2] = online.get(["b"], at_ms=50)
    assert b2 is not None
    assert b2["n_100"] == 2
    with pytest.raises(InputError, match="key column 'user_id'"):
        online.write_entity_features(pa.table({"id": ["a"], "risk_tier": [1.0]}))
