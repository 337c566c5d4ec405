from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fourfold.demo.data import generate_transactions
from fourfold.demo.history import FEATURES, HISTORY_FEATURES, add_history_features, feature_matrix

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
START = 1_744_070_400_000  # 2025-04-08T00:00:00Z


def _table(users: list[str], ms: list[int] | np.ndarray[Any, Any], amounts: Any) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "event_time": pa.array(np.asarray(ms, dtype=np.int64) + START, pa.timestamp("ms", tz="UTC")),
            "amount": pa.array(np.asarray(amounts, dtype=np.float64)),
        }
    )


def _brute_force(table: pa.Table) -> dict[str, np.ndarray[Any, Any]]:
    users = table.column("user_id").to_pylist()
    ms = table.column("event_time").cast("int64").to_numpy()
    amount = table.column("amount").to_numpy()
    n = len(users)
    out = {name: np.full(n, np.nan) for name in HISTORY_FEATURES}
    for i in range(n):

        def window(width: int, i: int = i) -> list[int]:
            return [j for j in range(n) if users[j] == users[i] and ms[i] - width <= ms[j] < ms[i]]

        out["txn_count_10m"][i] = len(window(10 * MIN))
        out["txn_count_1h"][i] = len(window(HOUR))
        out["amount_sum_1h"][i] = sum(amount[j] for j in window(HOUR))
        week = window(7 * DAY)
        if week:
            out["amount_mean_7d"][i] = sum(amount[j] for j in week) / len(week)
            out["amount_ratio_7d"][i] = amount[i] / out["amount_mean_7d"][i]
        earlier = [ms[j] for j in range(n) if users[j] == users[i] and ms[j] < ms[i]]
        if earlier:
            out["seconds_since_last"][i] = (ms[i] - max(earlier)) / 1000
    return out


def _assert_matches_brute_force(table: pa.Table) -> None:
    result = add_history_features(table)
    expected = _brute_force(table)
    for name in HISTORY_FEATURES:
        got = result.column(name).to_numpy()
        np.testing.assert_allclose(got, expected[name], rtol=1e-9, atol=1e-9, err_msg=name)


def test_window_edges_and_ties_exactly() -> None:
    # a: t=0, then exactly 10 min later (t-W included), then 10 min + 1 ms after t=0 (excluded),
    # then a tie at 600_001 that must not see its twin.
    table = _table(
        ["a", "a", "a", "a", "b"], [0, 10 * MIN, 10 * MIN + 1, 10 * MIN + 1, 10 * MIN], [1, 2, 4, 8, 16]
    )
    result = add_history_features(table)
    assert result.column("txn_count_10m").to_pylist() == [0, 1, 1, 1, 0]
    assert result.column("txn_count_1h").to_pylist() == [0, 1, 2, 2, 0]
    assert result.column("amount_sum_1h").to_pylist() == [0, 1, 3, 3, 0]
    assert result.column("seconds_since_last").to_pylist()[1:4] == [600.0, 0.001, 0.001]
    assert np.isnan(result.column("seconds_since_last").to_numpy()[[0, 4]]).all()
    assert np.isnan(result.column("amount_mean_7d").to_numpy()[[0, 4]]).all()
    assert np.isnan(result.column("amount_ratio_7d").to_numpy()[[0, 4]]).all()
    assert result.column("amount_ratio_7d").to_pylist()[2] == pytest.approx(4 / 1.5)
    _assert_matches_brute_force(table)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_minute_grid(seed: int) -> None:
    # A coarse grid with +-1 ms jitter puts many events exactly on, just inside and just outside
    # the 10 min and 1 h window edges, with plenty of ties.
    rng = np.random.default_rng(seed)
    n = 250
    ms = rng.integers(0, 180, n) * MIN + rng.choice([-1, 0, 0, 1], n) + 5
    users = [f"u{i}" for i in rng.integers(0, 4, n)]
    _assert_matches_brute_force(_table(users, ms, rng.lognormal(3, 1, n).round(2)))


def test_matches_brute_force_on_day_grid() -> None:
    # Half-day grid over 20 days: exercises the 7 day window edges.
    rng = np.random.default_rng(9)
    n = 200
    ms = rng.integers(0, 40, n) * (12 * HOUR) + rng.choice([-1, 0, 1], n) + 5
    users = [f"u{i}" for i in rng.integers(0, 3, n)]
    _assert_matches_brute_force(_table(users, ms, rng.lognormal(3, 1, n).round(2)))


def test_keeps_rows_order_and_columns() -> None:
    table = generate_transactions(2_000, seed=4)
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    result = add_history_features(shuffled)
    assert result.column_names[: len(table.column_names)] == table.column_names
    assert result.select(table.column_names).equals(shuffled)
    assert set(FEATURES) <= set(result.column_names)
    for name in HISTORY_FEATURES:
        assert result.schema.field(name).type == pa.float64()
    # Order-independent: the same event gets the same features however the input is ordered.
    np.testing.assert_array_equal(
        feature_matrix(result.sort_by("event_id")), feature_matrix(add_history_features(table))
    )
    # Running it twice replaces rather than duplicates.
    assert add_history_features(result).column_names == result.column_names


def test_hour_of_day_is_utc_hour() -> None:
    table = _table(["a", "a"], [0, 23 * HOUR + 59 * MIN], [1.0, 1.0])
    assert add_history_features(table).column("hour_of_day").to_pylist() == [0, 23]


def test_feature_matrix_is_float64_in_feature_order() -> None:
    result = add_history_features(generate_transactions(1_000, seed=2))
    matrix = feature_matrix(result)
    assert matrix.dtype == np.float64
    assert matrix.shape == (1_000, len(FEATURES))
    assert matrix.flags.c_contiguous
    np.testing.assert_array_equal(matrix[:, 1], result.column("merchant_category").to_numpy())


def test_rejects_non_timestamp_event_time() -> None:
    table = pa.table({"user_id": ["a"], "event_time": [1], "amount": [1.0]})
    with pytest.raises(TypeError, match="timestamp"):
        add_history_features(table)


def test_sums_stay_exact_next_to_a_huge_user() -> None:
    # A plain cumsum would carry user a's 1e15-scale total into user b's small differences.
    n = 50
    users = ["a"] * n + ["b"] * n
    ms = list(range(0, n * 1000, 1000)) * 2
    amounts = [1e15 + 0.5] * n + [0.01] * n
    result = add_history_features(_table(users, ms, amounts))
    b_sums = result.column("amount_sum_1h").to_numpy()[n:]
    np.testing.assert_allclose(b_sums, np.arange(n) * 0.01, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(result.column("amount_ratio_7d").to_numpy()[n + 1 :], 1.0, rtol=1e-12)
