"""The windowed features of a feature set as the incremental engine reads them: which windows there
are, which aggregation reads which state column over which window (and which running-aggregate slot
it shares), and the reading of one key's windows at a time by bisects and C-level passes.

The engine (``features.incremental``) decides *when* windows are read (per event, before the fold);
this module says *what* they are. The running aggregates of in-order keys (``features.sliding``) are
built from the same plan (:meth:`Windows.sliding`).
"""

from __future__ import annotations

import math
from bisect import bisect_left

from fourfold.features.definitions import FeatureSet
from fourfold.features.sliding import COUNT, DISTINCT, LAST, MAX, MEAN, MIN, SUM, Sliding
from fourfold.features.state import KeyState, Layout

__all__ = ["Windows"]

_CODES = {"count": COUNT, "sum": SUM, "mean": MEAN, "min": MIN, "max": MAX,
          "count_distinct": DISTINCT, "last": LAST}  # fmt: skip


class Windows:
    """``feature_set``'s windowed features over ``layout``'s state columns, in the feature set's order."""

    def __init__(self, feature_set: FeatureSet, layout: Layout) -> None:
        windows = sorted({(f.window.ms, f.hop.ms if f.hop else 0) for f in feature_set.windowed})
        col_index = {c: i for i, c in enumerate(layout.columns)}
        self.windows = tuple(windows)
        ops = tuple(
            (
                _CODES[f.agg],
                windows.index((f.window.ms, f.hop.ms if f.hop else 0)),
                col_index.get(f.column or "", -1) if f.agg != "count" else -1,
            )
            for f in feature_set.windowed
        )
        self.names = tuple(f.name for f in feature_set.windowed)
        self.empty = tuple(f.empty_value for f in feature_set.windowed)
        # The running aggregates: one slot per (kind, window, column), shared by the features that read it
        # (a sum and a mean of one column over one window share their terms).
        kinds = {SUM: SUM, MEAN: SUM, MIN: MIN, MAX: MAX, DISTINCT: DISTINCT}
        slots: dict[tuple[int, int, int], int] = {}
        per_kind = dict.fromkeys((SUM, MIN, MAX, DISTINCT), 0)
        aggs: list[list[tuple[int, int, int]]] = [[] for _ in windows]
        fast: list[tuple[int, int, int, int, float]] = []
        for (code, wi, ci), empty in zip(ops, self.empty, strict=True):
            slot = -1
            if code in kinds:
                kind = kinds[code]
                if (kind, wi, ci) not in slots:
                    slots[kind, wi, ci] = per_kind[kind]
                    aggs[wi].append((kind, per_kind[kind], ci))
                    per_kind[kind] += 1
                slot = slots[kind, wi, ci]
            fast.append((code, wi, ci, slot, empty))
        self.fast = tuple(fast)
        self._summed = tuple(sorted({ci for kind, _, ci in slots if kind == SUM}))
        self._plan = tuple((wi, w, hop, tuple(aggs[wi])) for wi, (w, hop) in enumerate(windows))
        self._counts = (per_kind[SUM], per_kind[DISTINCT], per_kind[MIN], per_kind[MAX])
        self._n_columns = len(layout.columns)

    def sliding(self) -> Sliding:
        """The running aggregates for keys whose events arrive in order, on this plan."""
        return Sliding(self._plan, self.fast, self._counts, self._summed, self._n_columns)

    def at(self, st: KeyState | None, t: int) -> list[float]:
        """The windows of a key's state at ``t`` by bisects and C-level passes (for out-of-order events,
        short states and reads)."""
        if st is None:
            return list(self.empty)
        ts = st.ts
        hi = bisect_left(ts, t)
        if hi == 0:
            return list(self.empty)
        los = []  # a loop, not a comprehension: cheaper for a few windows
        for w, hop in self.windows:
            los.append(bisect_left(ts, (t - w) // hop * hop if hop else t - w, 0, hi))
        cols = st.columns
        out: list[float] = []
        for code, wi, ci, _, empty in self.fast:
            lo = los[wi]
            if lo == hi:
                out.append(empty)
            elif code == COUNT:
                out.append(float(hi - lo))
            elif code == SUM:
                out.append(math.fsum(cols[ci][lo:hi]))
            elif code == MEAN:
                out.append(math.fsum(cols[ci][lo:hi]) / (hi - lo))
            elif code == MIN:
                out.append(min(cols[ci][lo:hi]))
            elif code == MAX:
                out.append(max(cols[ci][lo:hi]))
            elif code == DISTINCT:
                out.append(float(len(set(cols[ci][lo:hi]))))
            else:  # last: the state is ordered by (ts, seq), so the newest window event is at hi - 1
                out.append(cols[ci][hi - 1])
        return out
