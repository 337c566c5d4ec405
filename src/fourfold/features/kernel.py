"""The vectorized windowed-aggregation kernel behind the offline engine and micro-batches.

Input: events already validated, as arrays in arrival order - key codes, timestamps in ms, one value
array per column - of which the first ``n_prior`` are events already folded into state (accepted, and
arrived before every other row). Output: for each other row, whether it is late and, if not, every
windowed feature's value as the incremental engine computes it when that event arrives.

How it stays exact without a Python loop per event:

1. Lateness: with rows grouped by key in arrival order, a running max of the timestamp gives each
   event the newest timestamp seen for its key before it; an event more than the allowed lateness behind
   it is late. (A late event is below that max, so dropping it never changes the max.)
2. Windows: accepted rows sorted by (key, ts, arrival); the window ``[t - W, t)`` of an event is a
   contiguous range found with one ``searchsorted``. Counts, sums (a segment tree of pairwise
   block sums: the error is relative to the window's own values),
   means, min / max (a sparse table built level by level, O(n) memory) and ``last`` come from the range;
   ``count_distinct`` from a difference array over the runs of windows each row is new in.
3. Arrival order: a row in that range may have arrived *after* the event (out of order, within the
   lateness). Such a row has ``ts >= t - L``, so only the last ``L`` of the window can hold one; a range
   max of arrival positions finds the affected events, and only those are recomputed from their window
   rows filtered by arrival.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fourfold.features.definitions import WindowedFeature

__all__ = ["KernelResult", "windowed_kernel"]

Reduce = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class KernelResult:
    late: np.ndarray  # bool, per non-prior row
    lateness_ms: np.ndarray  # int64, per non-prior row (0 when not late)
    values: dict[str, np.ndarray]  # float64 per feature, per non-prior row (NaN when late)


def range_reduce(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, op: Reduce, empty: float) -> np.ndarray:
    """``op``-reduce ``values[lo:hi]`` for every (lo, hi), for an idempotent ``op`` (min, max)."""
    out = np.full(len(lo), empty, dtype=np.float64)
    length = hi - lo
    nonempty = length > 0
    if not nonempty.any():
        return out
    level = np.zeros(len(lo), dtype=np.int64)
    level[nonempty] = np.floor(np.log2(length[nonempty])).astype(np.int64)
    table = np.asarray(values, dtype=np.float64).copy()
    for k in range(int(level.max()) + 1):
        if k:
            step = 1 << (k - 1)
            table[:-step] = op(table[:-step], table[step:])  # table[j] now covers [j, j + 2**k)
        sel = np.flatnonzero(nonempty & (level == k))
        if len(sel):
            out[sel] = op(table[lo[sel]], table[hi[sel] - (1 << k)])
    return out


def windowed_kernel(
    codes: np.ndarray,
    ts: np.ndarray,
    columns: Mapping[str, np.ndarray],
    features: tuple[WindowedFeature, ...],
    *,
    lateness_ms: int,
    n_prior: int = 0,
) -> KernelResult:
    n = len(codes)
    n_new = n - n_prior
    if n_new <= 0:
        empty = np.zeros(0)
        return KernelResult(np.zeros(0, bool), np.zeros(0, np.int64), {f.name: empty for f in features})
    max_window = max((f.reach for f in features), default=0)
    tmin, tmax = int(ts.min()), int(ts.max())
    shift = max_window + lateness_ms + 1
    span = tmax - tmin + shift + 1
    if (int(codes.max()) + 1) * span >= 2**62:
        raise OverflowError("too many keys over too long a time span for one kernel call; split the log")
    comp = codes.astype(np.int64) * span + (ts - tmin + shift)

    # 1. lateness, in arrival order within each key
    by_key = np.argsort(codes, kind="stable")
    c_sorted = comp[by_key]
    running = np.maximum.accumulate(c_sorted)
    prev = np.empty(n, dtype=np.int64)
    prev[0] = np.iinfo(np.int64).min
    prev[1:] = running[:-1]
    same_key = np.zeros(n, dtype=bool)
    same_key[1:] = codes[by_key][1:] == codes[by_key][:-1]
    behind = np.where(same_key, (prev - lateness_ms) - c_sorted, 0)
    late_sorted = same_key & (behind > 0)
    late = np.empty(n, dtype=bool)
    late[by_key] = late_sorted
    late[:n_prior] = False
    lateness = np.zeros(n, dtype=np.int64)
    lateness[by_key] = np.where(late_sorted, behind, 0)

    # 2. accepted rows in (key, ts, arrival) order
    # rows grouped by key in arrival order are nearly in time order: a stable sort of that is near-linear
    keep = ~late_sorted
    keep[by_key < n_prior] = True
    by_key_acc, c_acc = by_key[keep], c_sorted[keep]
    order = by_key_acc[np.argsort(c_acc, kind="stable")]
    comp_a = comp[order]
    pos_a = order  # arrival position of each accepted row
    queries = np.flatnonzero(~late[n_prior:]) + n_prior
    # Work in (key, ts) order: sorted needles make every searchsorted a near-linear merge.
    where_a = np.empty(n, dtype=np.int64)
    where_a[order] = np.arange(len(order))
    q_a = where_a[queries]  # each query's own row among the accepted
    hi = np.searchsorted(comp_a, comp_a, side="left")  # first row at the same (key, ts)

    cache: dict[str, np.ndarray] = {}
    prefixes: dict[str, list[np.ndarray]] = {}
    starts: dict[tuple[int, int], np.ndarray] = {}
    codes_a, ts_a = codes[order].astype(np.int64), ts[order]

    def gathered(column: str) -> np.ndarray:  # one gather per column, however many features use it
        if column not in cache:
            cache[column] = columns[column][order]
        return cache[column]

    def prefix(column: str) -> list[np.ndarray]:
        if column not in prefixes:
            prefixes[column] = sum_levels(gathered(column))
        return prefixes[column]

    out: dict[str, np.ndarray] = {}
    affected_cache: dict[tuple[int, int], np.ndarray] = {}
    for feat in features:
        w, hop = feat.window.ms, (feat.hop.ms if feat.hop else 0)
        if (w, hop) not in starts:  # the window's first timestamp, per row, as a sorted needle
            first = (ts_a - w) // hop * hop if hop else ts_a - w
            starts[(w, hop)] = np.searchsorted(comp_a, codes_a * span + (first - tmin + shift), side="left")
        lo = starts[(w, hop)]
        vals = None if feat.column is None else gathered(feat.column)
        if feat.agg == "count_distinct":
            assert vals is not None
            per_row = distinct_counts(vals, codes_a, lo, hi)
        else:
            summed = prefix(feat.column) if feat.column and feat.agg in ("sum", "mean") else None
            per_row = range_aggregate(feat.agg, vals, lo, hi, summed)
        values = per_row[q_a]
        if lateness_ms > 0:
            if (w, hop) not in affected_cache:
                b = np.maximum(lo, np.searchsorted(comp_a, comp_a - lateness_ms, side="left"))
                newest = range_reduce(pos_a.astype(np.float64), b[q_a], hi[q_a], np.maximum, -1.0)
                affected_cache[(w, hop)] = np.flatnonzero(newest > queries)
            hit = affected_cache[(w, hop)]
            if len(hit):
                qa = q_a[hit]
                values[hit] = pairs_aggregate(feat.agg, vals, lo[qa], hi[qa], pos_a, queries[hit])
        full = np.full(n_new, np.nan)
        full[queries - n_prior] = values
        out[feat.name] = full
    return KernelResult(late[n_prior:], lateness[n_prior:], out)


def sum_levels(vals: np.ndarray) -> list[np.ndarray]:
    """Pairwise block sums: level ``k`` holds the sums of the aligned blocks of ``2**k`` values."""
    levels = [np.asarray(vals, dtype=np.float64)]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        if len(prev) % 2:
            prev = np.append(prev, 0.0)
        levels.append(prev[0::2] + prev[1::2])
    return levels


def range_sum(levels: list[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum of each ``[lo, hi)`` from at most two aligned blocks per level (a segment tree, bottom up).

    The error is that of pairwise summation over the window's own values - not, as with a difference
    of prefix sums, of everything before it."""
    total = np.zeros(len(lo), dtype=np.float64)
    idx = np.flatnonzero(hi > lo)
    left, right = lo[idx].copy(), hi[idx].copy()
    for arr in levels:
        if not len(idx):
            break
        odd = (left & 1) == 1
        total[idx[odd]] += arr[left[odd]]
        left[odd] += 1
        odd = ((right & 1) == 1) & (left < right)
        right[odd] -= 1
        total[idx[odd]] += arr[right[odd]]
        left >>= 1
        right >>= 1
        keep = left < right
        idx, left, right = idx[keep], left[keep], right[keep]
    return total


def range_aggregate(
    agg: str, vals: np.ndarray | None, lo: np.ndarray, hi: np.ndarray, levels: list[np.ndarray] | None = None
) -> np.ndarray:
    """``agg`` over each contiguous range ``[lo, hi)`` of ``vals`` (all but ``count_distinct``)."""
    count: np.ndarray = (hi - lo).astype(np.float64)
    if agg == "count":
        return count
    assert vals is not None
    if agg in ("sum", "mean"):
        total = range_sum(sum_levels(vals) if levels is None else levels, lo, hi)
        if agg == "sum":
            return total
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan)
    if agg in ("min", "max"):
        return range_reduce(vals, lo, hi, np.minimum if agg == "min" else np.maximum, np.nan)
    if agg == "last":
        return np.where(hi > lo, vals[np.maximum(hi - 1, 0)], np.nan).astype(np.float64)
    raise ValueError(f"range_aggregate does not compute {agg!r}")


def distinct_counts(vals: np.ndarray, keys: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distinct values of ``vals`` in each range ``[lo, hi)``, for ranges whose ends never move left.

    Row ``j`` adds one exactly to the ranges that hold it and no earlier row of its value: those with
    ``prev(j) < lo <= j < hi`` - a contiguous run of ranges, since ``lo`` and ``hi`` are non-decreasing.
    One difference array over those runs gives every count in O(n log n)."""
    n, m = len(vals), len(lo)
    if vals.dtype.kind in "iu" and len(vals) and int(vals.max()) - int(vals.min()) < 2**40:
        vcode = vals.astype(np.int64) - int(vals.min())  # already codes (or small ints): no sort needed
    elif vals.dtype.kind in "iuf":
        _, vcode = np.unique(vals, return_inverse=True)
    else:
        import pyarrow as pa
        import pyarrow.compute as pc

        vcode = np.asarray(pc.dictionary_encode(pa.array(vals, pa.string())).indices, dtype=np.int64)
    group = keys.astype(np.int64) * (int(vcode.max(initial=0)) + 1) + vcode
    order = np.argsort(group, kind="stable")
    prev = np.full(n, -1, dtype=np.int64)
    same = group[order][1:] == group[order][:-1]
    prev[order[1:][same]] = order[:-1][same]
    rows = np.arange(n)
    start = np.maximum(np.searchsorted(lo, prev, side="right"), np.searchsorted(hi, rows, side="right"))
    end = np.searchsorted(lo, rows, side="right")
    run = start < end
    diff = np.bincount(start[run], minlength=m + 1) - np.bincount(end[run], minlength=m + 1)
    counts: np.ndarray = np.cumsum(diff[:m]).astype(np.float64)
    return counts


def pairs_aggregate(
    agg: str,
    vals: np.ndarray | None,
    lo: np.ndarray,
    hi: np.ndarray,
    pos: np.ndarray | None = None,
    before: np.ndarray | None = None,
) -> np.ndarray:
    """``agg`` over each range ``[lo, hi)`` by expanding the ranges' rows - keeping, when ``pos`` is
    given, only rows with ``pos < before`` (rows that arrived before the event) - and reducing per range.
    Costs the total length of the ranges: for the few events an out-of-order arrival touches."""
    m = len(lo)
    sizes = hi - lo
    total = int(sizes.sum())
    owner = np.repeat(np.arange(m), sizes)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    j = starts + np.arange(total)
    if pos is not None and before is not None:
        keep = pos[j] < before[owner]
        owner, j = owner[keep], j[keep]
    count = np.bincount(owner, minlength=m).astype(np.float64)
    if agg == "count":
        return count
    assert vals is not None
    v = vals[j]
    if agg in ("sum", "mean"):
        total_v = np.bincount(owner, weights=v.astype(np.float64), minlength=m)
        if agg == "sum":
            return total_v
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total_v / count, np.nan)
    if agg in ("min", "max"):
        init = np.inf if agg == "min" else -np.inf
        acc = np.full(m, init)
        (np.minimum if agg == "min" else np.maximum).at(acc, owner, v.astype(np.float64))
        return np.where(count > 0, acc, np.nan)
    if agg == "last":
        idx = np.full(m, -1)
        np.maximum.at(idx, owner, j)  # accepted rows are in (ts, arrival) order: the largest wins
        return np.where(idx >= 0, vals[np.maximum(idx, 0)], np.nan).astype(np.float64)
    _, vcode = np.unique(v, return_inverse=True)
    pairs = np.unique(owner.astype(np.int64) * (int(vcode.max(initial=0)) + 1) + vcode)
    return np.bincount(pairs // (int(vcode.max(initial=0)) + 1), minlength=m).astype(np.float64)
