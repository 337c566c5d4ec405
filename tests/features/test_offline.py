from __future__ import annotations

import math
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourfold import InputError
from fourfold.features import DefinitionError, FeatureSet
from fourfold.features.offline import PointInTime, compute_features, point_in_time_join
from pit import feature_set, reference, sum_tolerance

EXACT = ("count", "min", "max", "last", "count_distinct")


def assert_same(
    got: list[dict[str, Any]], ref: list[dict[str, Any]], fs: FeatureSet, tol: list[dict[str, float]]
) -> None:
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert (g["_late"], g["_lateness_ms"]) == (r["late"], r["lateness_ms"]), i
        if r["late"]:
            assert all(math.isnan(g[n]) for n in fs.names)
            continue
        for f in fs.features:
            a, b = g[f.name], r[f.name]
            if math.isnan(b):
                assert math.isnan(a), (i, f.name, a, b)
            elif getattr(f, "agg", "") in EXACT:
                assert a == b, (i, f.name, a, b)
            else:
                assert abs(a - b) <= max(tol[i].get(f.name, 0.0), 1e-300), (i, f.name, a, b)


@st.composite
def logs(draw: st.DrawFn, max_size: int = 60) -> pa.Table:
    n = draw(st.integers(1, max_size))
    users = draw(st.lists(st.sampled_from(["u1", "u2", "u3"]), min_size=n, max_size=n))
    base = sorted(draw(st.lists(st.integers(0, 700), min_size=n, max_size=n)))
    # out-of-order arrivals: some events arrive up to 150 ms behind, some exactly on window edges
    jitter = draw(
        st.lists(st.sampled_from([0, 0, 0, -1, -50, -99, -100, -101, -150]), min_size=n, max_size=n)
    )
    amounts = draw(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False), min_size=n, max_size=n)
    )
    merchants = draw(st.lists(st.sampled_from(["m1", "m2", "m3", "m4"]), min_size=n, max_size=n))
    ts = [b + j for b, j in zip(base, jitter, strict=True)]
    return pa.table({"user_id": users, "ts": ts, "amount": amounts, "merchant": merchants})


@settings(max_examples=150, deadline=None)
@given(logs(), st.sampled_from(["0ms", "1ms", "60ms", "100ms", "400ms"]))
def test_offline_engine_equals_the_point_in_time_reference(log: pa.Table, lateness: str) -> None:
    fs = feature_set(lateness)
    ref = reference(log.to_pylist(), fs, "user_id", "ts")
    assert_same(compute_features(log, fs).to_pylist(), ref, fs, sum_tolerance(log, fs))


def test_window_edges_and_ties() -> None:
    fs = feature_set()
    log = pa.table(
        {
            "user_id": ["u"] * 5,
            "ts": [0, 1, 100, 101, 101],
            "amount": [1.0, 2.0, 4.0, 8.0, 16.0],
            "merchant": ["a", "b", "a", "c", "d"],
        }
    )
    out = compute_features(log, fs).to_pylist()
    # t=100: the event at exactly t - W = 0 is included, so both earlier events count
    assert out[2]["n_100"] == 2
    # t=101: 0 is at t - W - 1 -> excluded; 1 is at t - W -> included; 100 included
    assert out[3]["n_100"] == 2
    assert out[3]["sum_100"] == 6.0
    # two events at the same time do not see each other
    assert out[4]["n_100"] == out[3]["n_100"] == 2
    assert out[4]["last_100"] == 4.0
    assert out[0]["n_100"] == 0
    assert out[0]["sum_100"] == 0.0
    assert math.isnan(out[0]["mean_300"])


def test_out_of_order_inside_and_beyond_the_lateness() -> None:
    fs = feature_set("50ms")
    log = pa.table(
        {
            "user_id": ["u", "u", "u", "u"],
            "ts": [100, 200, 170, 120],
            "amount": [1.0, 2.0, 4.0, 8.0],
            "merchant": ["a"] * 4,
        }
    )
    out = compute_features(log, fs).to_pylist()
    assert out[1]["n_100"] == 1  # scored before the out-of-order event arrived: keeps its value
    assert out[2]["_late"] is False  # 170 >= 200 - 50: folded in
    assert out[2]["n_100"] == 1  # sees 100 (>= 70), not 200 (later)
    assert out[3]["_late"] is True
    assert out[3]["_lateness_ms"] == 30  # 150 - 120
    assert math.isnan(out[3]["n_100"])


def test_independent_sql_formulation_on_an_in_order_log() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    log = pa.table(
        {
            "user_id": rng.choice([f"u{i}" for i in range(40)], n),
            "ts": np.sort(rng.integers(0, 20_000, n)),
            "amount": rng.lognormal(3, 1, n),
            "merchant": rng.choice([f"m{i}" for i in range(15)], n),
        }
    )
    fs = feature_set()
    ours = compute_features(log, fs)
    con = duckdb.connect()
    con.register("log", log.append_column("i", pa.array(np.arange(n))))
    sql = """
    SELECT e.i,
      count(x.i) FILTER (WHERE x.ts >= e.ts - 100) AS n_100,
      coalesce(sum(x.amount) FILTER (WHERE x.ts >= e.ts - 100), 0) AS sum_100,
      avg(x.amount) FILTER (WHERE x.ts >= e.ts - 300) AS mean_300,
      min(x.amount) FILTER (WHERE x.ts >= e.ts - 100) AS min_100,
      max(x.amount) FILTER (WHERE x.ts >= e.ts - 200) AS max_200,
      count(DISTINCT x.merchant) FILTER (WHERE x.ts >= e.ts - 150) AS merchants_150,
      arg_max(x.amount, x.ts * 100000 + x.i) FILTER (WHERE x.ts >= e.ts - 100) AS last_100
    FROM log e LEFT JOIN log x
      ON x.user_id = e.user_id AND x.ts < e.ts AND x.ts >= e.ts - 300
    GROUP BY e.i ORDER BY e.i
    """
    sql_rows = con.execute(sql).fetchnumpy()
    for name in ["n_100", "sum_100", "mean_300", "min_100", "max_200", "merchants_150", "last_100"]:
        expected = np.ma.filled(np.ma.asarray(sql_rows[name]).astype(np.float64), np.nan)  # NULL -> NaN
        got = ours[name].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True, err_msg=name)


def test_point_in_time_join_uses_the_window_before_each_timestamp() -> None:
    fs = feature_set()
    log = pa.table(
        {"user_id": ["a", "a", "b", "a"], "ts": [10, 50, 60, 150], "amount": [1.0, 2.0, 3.0, 4.0],
         "merchant": ["x", "y", "x", "x"]}
    )  # fmt: skip
    rows = pa.table({"user_id": ["a", "a", "b", "c"], "as_of": [50, 151, 61, 100]})
    out = point_in_time_join(rows, log, fs, timestamp="as_of").to_pylist()
    assert [r["n_100"] for r in out] == [1, 1, 1, 0]  # [t-100, t): 50 sees 10; 151 sees only 150
    assert out[1]["sum_100"] == 4.0
    assert out[1]["merchants_150"] == 2
    assert out[1]["last_100"] == 4.0
    assert math.isnan(out[3]["mean_300"])
    assert out[0]["as_of"] == 50  # the caller's columns are kept


def test_bad_rows_raise_with_the_row_or_are_rejected_with_the_reason() -> None:
    fs = feature_set()
    log = pa.table(
        {"user_id": ["a", None, "a", "a", ""], "ts": [1, 2, None, 4, 5],
         "amount": [1.0, 2.0, 3.0, math.nan, 1.0], "merchant": ["x", "x", "x", "x", "x"]}
    )  # fmt: skip
    with pytest.raises(InputError, match=r"row 1: key 'user_id' is missing \(4 bad row\(s\) in all\)"):
        compute_features(log, fs)
    out = compute_features(log, fs, on_error="reject").to_pylist()
    assert [r["_rejected"] for r in out] == [
        None, "key 'user_id' is missing", "timestamp 'ts' is missing",
        "field 'amount' must be a finite number", "key 'user_id' is empty",
    ]  # fmt: skip
    assert out[0]["n_100"] == 0
    assert all(math.isnan(r["n_100"]) for r in out[1:])


def test_wrong_column_types_and_definitions_are_named() -> None:
    fs = feature_set()
    text = pa.table({"user_id": ["a"], "ts": [1], "amount": ["12"], "merchant": ["x"]})
    with pytest.raises(InputError, match="column 'amount' must be numeric, got string"):
        compute_features(text, fs)
    with pytest.raises(InputError, match="no column 'merchant'"):
        compute_features(pa.table({"user_id": ["a"], "ts": [1], "amount": [1.0]}), fs)
    with pytest.raises(DefinitionError, match="unknown source 'nope'"):
        FeatureSet.from_dict(
            {**fs.to_dict(), "features": [{"name": "x", "source": "nope", "agg": "count", "window": "1m"}]}
        )
    with pytest.raises(DefinitionError, match="unknown aggregation 'median'"):
        FeatureSet.from_dict(
            {
                **fs.to_dict(),
                "features": [{"name": "x", "source": "tx", "agg": "median", "column": "a", "window": "1m"}],
            }
        )
    with pytest.raises(DefinitionError, match="cannot read duration '10 minutes'"):
        FeatureSet.from_dict(
            {
                **fs.to_dict(),
                "features": [{"name": "x", "source": "tx", "agg": "count", "window": "10 minutes"}],
            }
        )


def test_feature_set_yaml_round_trip(tmp_path: Any) -> None:
    fs = feature_set("1m", defaults_acceptable=False)
    fs.dump(tmp_path / "features.yaml")
    again = FeatureSet.load(tmp_path / "features.yaml")
    assert again == fs
    assert again.select(["last_100", "amount"]).names == ("last_100", "amount")
    with pytest.raises(DefinitionError, match="does not define 'nope'"):
        fs.select(["nope"])


def test_timestamps_as_arrow_timestamps() -> None:
    fs = feature_set()
    ms = pa.array([0, 50, 120], pa.timestamp("ms", tz="UTC"))
    us = pa.array([0, 50_000, 120_000], pa.timestamp("us"))
    base = {"user_id": ["a"] * 3, "amount": [1.0, 2.0, 3.0], "merchant": ["x"] * 3}
    a = compute_features(pa.table({**base, "ts": ms}), fs)["n_100"].to_pylist()
    b = compute_features(pa.table({**base, "ts": us}), fs)["n_100"].to_pylist()
    assert a == b == [0, 1, 1]


def test_key_chunks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import fourfold.features.offline as offline

    rng = np.random.default_rng(3)
    n = 4000
    log = pa.table(
        {
            "user_id": rng.choice([f"u{i}" for i in range(50)], n),
            "ts": np.sort(rng.integers(0, 5000, n)) - rng.integers(0, 80, n) * (rng.random(n) < 0.2),
            "amount": rng.normal(0, 100, n),
            "merchant": rng.choice(["a", "b", "c", "d", "e"], n),
        }
    )
    fs = feature_set("60ms")
    whole = compute_features(log, fs)
    monkeypatch.setattr(offline, "_CHUNK_ROWS", 700)
    chunked = compute_features(log, fs)
    for name in whole.column_names:
        a, b = chunked[name].to_numpy(zero_copy_only=False), whole[name].to_numpy(zero_copy_only=False)
        if name.startswith(("sum", "mean")):  # prefix sums over other rows round differently
            np.testing.assert_allclose(a, b, rtol=1e-12, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert whole["_late"].to_numpy(zero_copy_only=False).any()


def test_tiled_window_tail_hops() -> None:
    fs = feature_set()  # n_tiled: 100 ms window, 30 ms hop
    log = pa.table(
        {"user_id": ["u"] * 4, "ts": [149, 150, 155, 260], "amount": [1.0] * 4, "merchant": ["a"] * 4}
    )
    out = compute_features(log, fs).to_pylist()[3]
    assert out["n_100"] == 0  # [160, 260): nothing
    assert out["n_tiled"] == 2  # [150, 260): the tail hopped back to the 30 ms boundary at 150
    assert feature_set().windowed[-2].start(260) == 150
    assert feature_set().windowed[-1].reach == 200 + 63  # what state must keep for it


@settings(max_examples=120, deadline=None)
@given(
    logs(),
    st.sampled_from(["0ms", "100ms"]),
    st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "u3", "nobody"]), st.integers(-2_000, 3_000)), min_size=1
    ),
)
def test_point_in_time_lookups_equal_brute_force(
    log: pa.Table, lateness: str, probes: list[tuple[str, int]]
) -> None:
    """Each probe (key, t) sees exactly the accepted events of its key in its window before t - also far
    before and after the log's time range, and for keys with no events."""
    fs = feature_set(lateness)
    events = log.to_pylist()
    ref = reference(events, fs, "user_id", "ts")
    accepted = [e for e, r in zip(events, ref, strict=True) if not r["late"]]
    pit = PointInTime(log, fs)
    got = pit.at(pa.array([k for k, _ in probes]), np.array([t for _, t in probes]))
    for i, (k, t) in enumerate(probes):
        # the reference scores an event at t against the accepted events before it: a probe is such an
        # event that arrives last and is never late (lateness is judged per event, not per probe)
        [want] = reference([*accepted, {"user_id": k, "ts": t, "amount": 0.0, "merchant": "m1"}], fs,
                           "user_id", "ts")[-1:]  # fmt: skip
        if want["late"]:  # too old to be scored as an event: recompute without the lateness rule
            [want] = reference(
                [*accepted, {"user_id": k, "ts": t, "amount": 0.0, "merchant": "m1"}],
                feature_set("1000000ms"), "user_id", "ts",
            )[-1:]  # fmt: skip
        for f in fs.windowed:
            a, b = float(got[f.name][i]), want[f.name]
            if math.isnan(b):
                assert math.isnan(a), (k, t, f.name, a)
            elif f.agg in EXACT:
                assert a == b, (k, t, f.name, a, b)
            else:
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-3), (k, t, f.name, a, b)
