"""Point-in-time test support: a brute-force reference of the rules, written for clarity, O(n^2), that
every engine must agree with, and a feature set using every aggregation."""

from __future__ import annotations

import math
from typing import Any

from fourfold.features import FeatureSet


def reference(events: list[dict[str, Any]], fs: FeatureSet, key: str, ts: str) -> list[dict[str, Any]]:
    """Per event in arrival order: {"late": bool, "lateness_ms": int, **features}."""
    lateness = fs.allowed_lateness.ms
    accepted: list[tuple[int, dict[str, Any]]] = []  # (arrival, event)
    max_ts: dict[Any, int] = {}
    out: list[dict[str, Any]] = []
    for i, e in enumerate(events):
        k, t = e[key], int(e[ts])
        if k in max_ts and t < max_ts[k] - lateness:
            out.append({"late": True, "lateness_ms": max_ts[k] - lateness - t})
            continue
        row: dict[str, Any] = {"late": False, "lateness_ms": 0}
        for f in fs.windowed:
            w = [(a, x) for a, x in accepted if x[key] == k and f.start(t) <= int(x[ts]) < t]
            vals = [x[f.column] for _, x in w] if f.column else []
            if f.agg == "count":
                v = float(len(w))
            elif f.agg == "sum":
                v = math.fsum(vals)
            elif f.agg == "mean":
                v = math.fsum(vals) / len(vals) if vals else math.nan
            elif f.agg == "min":
                v = min(vals) if vals else math.nan
            elif f.agg == "max":
                v = max(vals) if vals else math.nan
            elif f.agg == "count_distinct":
                v = float(len(set(vals)))
            else:  # last: greatest (ts, arrival)
                v = max(w, key=lambda ax: (int(ax[1][ts]), ax[0]))[1][f.column] if w else math.nan
            row[f.name] = float(v)
        for r in fs.request:
            row[r.name] = float(e[r.field])
        out.append(row)
        accepted.append((i, e))
        max_ts[k] = max(max_ts.get(k, t), t)
    return out


def feature_set(lateness: str = "0ms", **extra: Any) -> FeatureSet:
    """Every aggregation over a few windows, keyed by ``user_id`` with event time ``ts``."""
    return FeatureSet.from_dict(
        {
            "name": "pit",
            "entities": [{"name": "user", "join_key": "user_id"}],
            "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
            "allowed_lateness": lateness,
            "features": [
                {"name": "amount", "request": "amount"},
                {"name": "n_100", "source": "tx", "agg": "count", "window": "100ms"},
                {"name": "sum_100", "source": "tx", "agg": "sum", "column": "amount", "window": "100ms"},
                {"name": "mean_300", "source": "tx", "agg": "mean", "column": "amount", "window": "300ms"},
                {"name": "min_100", "source": "tx", "agg": "min", "column": "amount", "window": "100ms"},
                {"name": "max_200", "source": "tx", "agg": "max", "column": "amount", "window": "200ms"},
                {"name": "merchants_150", "source": "tx", "agg": "count_distinct", "column": "merchant",
                 "window": "150ms"},
                {"name": "last_100", "source": "tx", "agg": "last", "column": "amount", "window": "100ms"},
                # tiles (sawtooth windows): the tail hops, so the window reaches back up to W + hop - 1
                {"name": "n_tiled", "source": "tx", "agg": "count", "window": "100ms", "hop": "30ms"},
                {"name": "max_tiled", "source": "tx", "agg": "max", "column": "amount", "window": "200ms",
                 "hop": "64ms"},
            ],
            **extra,
        }
    )  # fmt: skip


def sum_tolerance(log: Any, fs: FeatureSet) -> list[dict[str, float]]:
    """Per event, the allowed difference of each sum / mean: 1e-9 of the window's sum of magnitudes.

    That is 1e-9 relative when the values share a sign (amounts); with cancellation no floating-point
    summation but an exact one is relative to the (tiny) result, so the bound is on the magnitudes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from fourfold.features.offline import compute_features

    columns = {f.column for f in fs.windowed if f.agg in ("sum", "mean") and f.column}
    for c in columns:
        log = log.set_column(log.schema.get_field_index(c), c, pc.abs(log[c]).cast(pa.float64()))
    rows = compute_features(log, fs, on_error="reject").to_pylist()
    names = [f.name for f in fs.windowed if f.agg in ("sum", "mean")]
    return [{n: 1e-9 * r[n] if r[n] == r[n] else 0.0 for n in names} for r in rows]
