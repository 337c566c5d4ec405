"""Point-in-time user history features for the fraud demo.

An event at time ``t`` sees only the same user's events ``x`` with ``t - W <= x.event_time < t``:
the event itself and events at the same timestamp are excluded, so the features computed for
training are exactly what a live system could have known when the event arrived.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FEATURES", "HISTORY_FEATURES", "REQUEST_FEATURES", "add_history_features", "feature_matrix"]

REQUEST_FEATURES: list[str] = ["amount", "merchant_category", "device", "hour_of_day"]
HISTORY_FEATURES: list[str] = [
    "txn_count_10m",
    "txn_count_1h",
    "amount_sum_1h",
    "amount_mean_7d",
    "amount_ratio_7d",
    "seconds_since_last",
]
FEATURES: list[str] = REQUEST_FEATURES + HISTORY_FEATURES

_MINUTE_MS = 60_000
_HOUR_MS = 60 * _MINUTE_MS
_WINDOWS_MS = {"10m": 10 * _MINUTE_MS, "1h": _HOUR_MS, "7d": 7 * 24 * _HOUR_MS}


def add_history_features(table: pa.Table) -> pa.Table:
    """Return ``table`` (same rows, same order) with ``hour_of_day`` and the history features added.

    Needs ``user_id``, ``event_time`` (a timestamp) and ``amount``. ``hour_of_day`` is int8 (UTC);
    history features are float64, NaN where the user has no earlier event in the window that
    defines them. Existing columns with those names are replaced.

    >>> from fourfold.demo.data import generate_transactions
    >>> add_history_features(generate_transactions(1_000)).select(FEATURES).num_rows
    1000
    """
    t = _time_ms(table)
    amount = np.asarray(table.column("amount").to_numpy(), dtype=np.float64)
    user = _user_codes(table.column("user_id"))

    # Ties broken by amount so that the result does not depend on the input's row order.
    order = np.lexsort((amount, t, user))
    t_s, user_s, amount_s = t[order], user[order], amount[order]
    # One monotone key per (user, time): user blocks are spaced so that no window reaches back
    # into the previous user's block, which lets a single searchsorted serve every group.
    t_rel = t_s - (t_s.min() if t_s.size else 0)
    block = int(t_rel.max() if t_rel.size else 0) + max(_WINDOWS_MS.values()) + 1
    if user_s.size and int(user_s.max()) + 1 > np.iinfo(np.int64).max // block:
        raise ValueError("event_time span too large for the history key")
    key = user_s * block + t_rel
    hi = np.searchsorted(key, key, side="left")  # first event of this user at this same time
    csum = _grouped_prefix_sums(amount_s, user_s)

    def window(width_ms: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        lo = np.searchsorted(key, key - width_ms, side="left")
        return (hi - lo).astype(np.float64), csum[hi] - csum[lo]

    count_10m, _ = window(_WINDOWS_MS["10m"])
    count_1h, sum_1h = window(_WINDOWS_MS["1h"])
    count_7d, sum_7d = window(_WINDOWS_MS["7d"])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_7d = np.where(count_7d > 0, sum_7d / np.maximum(count_7d, 1.0), np.nan)
        ratio_7d = amount_s / mean_7d
    prev = np.maximum(hi - 1, 0)
    has_prev = (hi > 0) & (user_s[prev] == user_s)
    since_last = np.where(has_prev, (t_s - t_s[prev]) / 1000.0, np.nan)

    sorted_values = {
        "txn_count_10m": count_10m,
        "txn_count_1h": count_1h,
        "amount_sum_1h": sum_1h,
        "amount_mean_7d": mean_7d,
        "amount_ratio_7d": ratio_7d,
        "seconds_since_last": since_last,
    }
    new_columns: dict[str, Any] = {"hour_of_day": pa.array(((t // _HOUR_MS) % 24).astype(np.int8))}
    for name, values in sorted_values.items():
        out = np.empty_like(values)
        out[order] = values
        new_columns[name] = pa.array(out, pa.float64())

    table = table.drop_columns([c for c in new_columns if c in table.column_names])
    for name, column in new_columns.items():
        table = table.append_column(name, column)
    return table


def feature_matrix(table: pa.Table, features: list[str] | None = None) -> np.ndarray[Any, Any]:
    """Return the ``features`` columns (default ``FEATURES``) as a C-contiguous float64 matrix.

    >>> from fourfold.demo.data import generate_transactions
    >>> feature_matrix(add_history_features(generate_transactions(1_000))).shape
    (1000, 10)
    """
    names = FEATURES if features is None else features
    if not names:
        return np.empty((table.num_rows, 0), dtype=np.float64)
    cols = [np.asarray(table.column(n).to_numpy(zero_copy_only=False), dtype=np.float64) for n in names]
    return np.ascontiguousarray(np.column_stack(cols))


def _user_codes(column: Any) -> np.ndarray[Any, Any]:
    # Codes follow the sorted distinct ids, not first appearance, for the same reason as the tie-break.
    distinct = pc.unique(column)
    distinct = distinct.take(pc.sort_indices(distinct))
    return np.asarray(pc.index_in(column, value_set=distinct).to_numpy(), dtype=np.int64)


def _grouped_prefix_sums(values: np.ndarray[Any, Any], groups: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Prefix sums (length n + 1) whose differences within a group are accurate to that group's scale.

    A plain cumsum over a million rows carries the whole table's magnitude into every difference;
    subtracting each group's total at its last row brings the running sum back near zero. Only
    prefixes at a group's own rows are meant to be differenced (never the one past its last row).
    """
    x = values.copy()
    if x.size:
        starts = np.flatnonzero(np.concatenate([[True], groups[1:] != groups[:-1]]))
        x[starts[1:] - 1] -= np.add.reduceat(values, starts)[:-1]
    return np.concatenate([[0.0], np.cumsum(x)])


def _time_ms(table: pa.Table) -> np.ndarray[Any, Any]:
    column = table.column("event_time")
    if not pa.types.is_timestamp(column.type):
        raise TypeError(f"event_time must be a timestamp, got {column.type}")
    # Sub-millisecond precision is dropped on purpose: windows are defined on milliseconds.
    as_ms = column.cast(pa.timestamp("ms", tz=column.type.tz), safe=False)
    return np.asarray(as_ms.cast(pa.int64()).to_numpy(), dtype=np.int64)
