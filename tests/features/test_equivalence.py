"""The guarantee: on the same log, the offline engine and the incremental engine give the same value for
every event and feature (exact for counts, min, max, last, count_distinct; sums and means within 1e-9
of the window's sum of magnitudes - 1e-9 relative for same-sign values such as amounts), with ties,
out-of-order arrivals, late events and window edges."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from fourfold.features import FeatureSet
from fourfold.features.incremental import IncrementalEngine, Late, Rejected, Scored
from fourfold.features.offline import compute_features
from pit import feature_set, sum_tolerance

EXACT = ("count", "min", "max", "last", "count_distinct")


def incremental(log: pa.Table, fs: FeatureSet) -> list[Scored | Late | Rejected]:
    engine = IncrementalEngine(fs)
    return [engine.process(row) for row in log.to_pylist()]


def assert_engines_agree(log: pa.Table, fs: FeatureSet) -> int:
    offline = compute_features(log, fs, on_error="reject").to_pylist()
    online = incremental(log, fs)
    tolerance = sum_tolerance(log, fs)
    aggs = {f.name: getattr(f, "agg", "request") for f in fs.features}
    compared = 0
    for i, (off, inc) in enumerate(zip(offline, online, strict=True)):
        if isinstance(inc, Rejected):
            assert off["_rejected"] is not None, (i, inc.reason)
            continue
        assert off["_rejected"] is None, (i, off["_rejected"])
        if isinstance(inc, Late):
            assert off["_late"], i
            assert off["_lateness_ms"] == inc.lateness_ms, i
            continue
        assert not off["_late"], i
        for name, value in inc.values.items():
            got = off[name]
            if math.isnan(value):
                assert math.isnan(got), (i, name, got)
            elif aggs[name] in EXACT or aggs[name] == "request":
                assert got == value, (i, name, got, value)
            else:
                assert abs(got - value) <= max(tolerance[i][name], 1e-300), (i, name, got, value)
            compared += 1
    return compared


@st.composite
def logs(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(1, 80))
    users = draw(st.lists(st.sampled_from(["u1", "u2", "u3", "u4"]), min_size=n, max_size=n))
    base = sorted(draw(st.lists(st.integers(0, 900), min_size=n, max_size=n)))
    # arrivals out of order, by amounts that land on and around window edges and the lateness
    jitter = draw(
        st.lists(st.sampled_from([0, 0, 0, 0, -1, -30, -99, -100, -101, -149, -150, -151, -300]), min_size=n,
                 max_size=n)
    )  # fmt: skip
    amounts = draw(
        st.lists(
            st.one_of(st.integers(-1000, 1000).map(float), st.floats(-1e9, 1e9, allow_nan=False)),
            min_size=n,
            max_size=n,
        )
    )
    merchants = draw(st.lists(st.sampled_from(["m1", "m2", "m3", "m4", "m5"]), min_size=n, max_size=n))
    ts = [b + j for b, j in zip(base, jitter, strict=True)]
    return pa.table({"user_id": users, "ts": ts, "amount": amounts, "merchant": merchants})


@settings(max_examples=200, deadline=None)
@given(logs(), st.sampled_from(["0ms", "1ms", "100ms", "150ms", "1s"]))
def test_offline_and_incremental_engines_agree(log: pa.Table, lateness: str) -> None:
    assert_engines_agree(log, feature_set(lateness))


def test_agree_on_a_larger_realistic_log() -> None:
    from fourfold.demo.data import generate_transactions
    from fourfold.demo.features import FRAUD_FEATURES

    log = generate_transactions(30_000, seed=4)
    # shuffle a tenth of the events back in time by up to 2 minutes: some inside the 1m lateness, some late
    rng = np.random.default_rng(0)
    ts = log["event_time"].cast(pa.int64()).to_numpy().copy()
    moved = rng.random(len(ts)) < 0.1
    ts[moved] -= rng.integers(0, 120_000, moved.sum())
    log = log.set_column(log.schema.get_field_index("event_time"), "event_time", pa.array(ts))
    compared = assert_engines_agree(log, FRAUD_FEATURES)
    assert compared > 200_000
    late = compute_features(log, FRAUD_FEATURES)["_late"].to_numpy(zero_copy_only=False)
    assert 0 < late.sum() < moved.sum()


def test_rejections_agree() -> None:
    fs = feature_set("10ms")
    rows: list[dict[str, Any]] = [
        {"user_id": "a", "ts": 1, "amount": 1.0, "merchant": "x"},
        {"user_id": None, "ts": 2, "amount": 1.0, "merchant": "x"},
        {"user_id": "a", "ts": None, "amount": 1.0, "merchant": "x"},
        {"user_id": "a", "ts": 3, "amount": None, "merchant": "x"},
        {"user_id": "a", "ts": 4, "amount": math.inf, "merchant": "x"},
        {"user_id": "a", "ts": 5, "amount": 2.0, "merchant": None},
        {"user_id": "a", "ts": 6, "amount": 2.0, "merchant": "y"},
    ]
    log = pa.Table.from_pylist(rows)
    assert assert_engines_agree(log, fs) == 2 * len(fs.features)
