"""Sliding windows over one key's state: what makes an in-order event O(1) in the incremental engine.

A :class:`Track` is derived from a key's :class:`~fourfold.features.state.KeyState` (never stored): per
distinct window, the range of the state's events it covers and running aggregates over that range
(exact sums, value counts, monotonic deques for min and max). :class:`Sliding` moves a track forward
with the event time (each event enters and leaves each window once), folds an event in, and drops the
events no window can see any more in amortized O(1). The engine (``incremental.py``) decides when a key
slides and when its windows are read by bisects and C-level passes instead; both give the same values.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from operator import neg
from typing import Any

from fourfold.features.state import KeyState

__all__ = ["BIG", "COUNT", "DISTINCT", "LAST", "MAX", "MEAN", "MIN", "SUM", "Sliding", "Track"]

#: the aggregation codes of a plan
COUNT, SUM, MEAN, MIN, MAX, DISTINCT, LAST = range(7)
# Below this magnitude a running sum cannot overflow (a window would need ~1e8 such values), so it gives
# what summing the window gives; a key that folds a larger value sums its windows with C-level passes,
# which overflow (or not) as they did before the sums ran.
BIG = 1e300
_ACC_LIMIT = 24  # terms of a running sum before it is compressed to its exact partials
_CHAIN = 8  # C-level passes that build a min/max deque before the per-event rule takes over
_SIGNED_ZERO = math.copysign(1.0, math.fsum([-0.0])) < 0  # whether this Python's fsum keeps -0.0

Plan = tuple[tuple[int, int, int, tuple[tuple[int, int, int], ...]], ...]
Fast = tuple[tuple[int, int, int, int, float], ...]


def _exact(terms: list[float]) -> list[float]:
    """A few floats with the exact sum of ``terms``: each the ``fsum`` of what the ones before leave.

    The rest is a sum of floats, so a multiple of the least subnormal: a nonzero rest never rounds to 0."""
    out: list[float] = []
    rest = terms[:]
    s = math.fsum(rest)
    while s:
        out.append(s)
        rest.append(-s)
        s = math.fsum(rest)
    return out


def _chain(col: list[Any], lo: int, hi: int, smallest: bool) -> deque[int]:
    """The monotonic deque of ``col[lo:hi]``: the indices whose value no later one beats strictly, so its
    front is the first extreme value, the one ``min()``/``max()`` returns. A few C-level passes find its
    first links (each the first extreme of what follows the last), the per-event rule the rest."""
    dq: deque[int] = deque()
    j = lo
    for _ in range(_CHAIN):
        if j >= hi:
            return dq
        j = col.index(min(col[j:hi]) if smallest else max(col[j:hi]), j, hi)
        dq.append(j)
        j += 1
    for k in range(j, hi):
        v = col[k]
        if smallest:
            while dq and col[dq[-1]] > v:
                dq.pop()
        else:
            while dq and col[dq[-1]] < v:
                dq.pop()
        dq.append(k)
    return dq


def _inserted(dq: deque[int], col: list[Any], i: int, smallest: bool) -> deque[int]:
    """``dq`` after a value was inserted into ``col`` at ``i`` inside its range (indices from ``i`` on
    move up one): earlier indices it beats leave, and it joins unless a later value beats it."""
    items = list(dq)
    p = bisect_left(items, i)
    before, after = items[:p], [j + 1 for j in items[p:]]
    x = col[i]
    if smallest:
        while before and col[before[-1]] > x:
            before.pop()
        joins = not after or not col[after[0]] < x
    else:
        while before and col[before[-1]] < x:
            before.pop()
        joins = not after or not col[after[0]] > x
    if joins:
        before.append(i)
    before += after
    return deque(before)


class Track:
    """Derived from one key's state, never stored: its windows as of the time ``at`` of its newest read.

    Window ``w`` covers the events ``[los[w], hi)`` of the state's ``(ts, seq)`` order: ``hi`` is the first
    event at or after ``at``, ``los[w]`` the first at or after the window's start. Both only move forward
    as ``at`` grows. Per window and column: ``accs`` terms whose exact sum is the window's (values in,
    negated values out, now and then compressed to a few exact partials), ``dists`` value counts,
    ``mins``/``maxs`` monotonic deques of indices. Expiry is deferred until the state has grown by a
    quarter since it last dropped its dead events (``compact_at``), so that dropping costs O(1) per event;
    whatever shows the state (``state()``, dumps, ``read()``) drops them first (``deferred``)."""

    __slots__ = ("accs", "at", "compact_at", "deferred", "dists", "exact", "hi", "los", "maxs", "mins",
                 "newest")  # fmt: skip

    def __init__(self) -> None:
        self.at: int | None = None  # None: not built (the next in-order event builds it)
        self.hi = 0
        self.los: list[int] = []
        self.accs: list[list[float]] = []
        self.dists: list[dict[Any, int]] = []
        self.mins: list[deque[int]] = []
        self.maxs: list[deque[int]] = []
        self.newest: int | None = None  # the greatest seq of the key since its state was set
        self.compact_at = 0
        self.deferred = False  # events older than max_ts - horizon may still be in the state
        self.exact = True  # False while a summed value is near overflow: sums then take the slow path


class Sliding:
    """The sliding-window steps for one feature set's windows: ``plan`` is, per distinct window, its
    index, length, hop and running aggregates ``(kind, slot, column)``; ``fast`` per windowed feature
    ``(code, window, column, slot, empty value)``; ``slots`` how many sums, value counts, min and max
    deques a track holds; ``summed`` the columns some sum reads."""

    def __init__(
        self,
        plan: Plan,
        fast: Fast,
        slots: tuple[int, int, int, int],
        summed: tuple[int, ...],
        n_columns: int,
    ) -> None:
        self._plan, self._fast, self._slots, self._summed = plan, fast, slots, summed
        self._n_columns = n_columns

    def build(self, st: KeyState, tr: Track, t: int) -> list[float]:
        """Position ``tr`` at ``t`` from scratch (C-level passes over each window) and read it."""
        ts = st.ts
        if not st.columns:
            st.columns = [[] for _ in range(self._n_columns)]
        cols = st.columns
        hi = bisect_left(ts, t)
        n_sums, n_dists, n_mins, n_maxs = self._slots
        tr.accs = [[] for _ in range(n_sums)]
        tr.dists = [{} for _ in range(n_dists)]
        tr.mins = [deque() for _ in range(n_mins)]
        tr.maxs = [deque() for _ in range(n_maxs)]
        tr.los = []
        for _, w, hop, aggs in self._plan:
            lo = bisect_left(ts, (t - w) // hop * hop if hop else t - w, 0, hi)
            tr.los.append(lo)
            for kind, slot, ci in aggs:
                if kind == SUM:
                    tr.accs[slot] = cols[ci][lo:hi]
                elif kind == DISTINCT:
                    tr.dists[slot] = dict(Counter(cols[ci][lo:hi]))  # a dict: Counter has a Python del
                elif kind == MIN:
                    tr.mins[slot] = _chain(cols[ci], lo, hi, True)
                else:
                    tr.maxs[slot] = _chain(cols[ci], lo, hi, False)
        tr.at, tr.hi = t, hi
        tr.exact = all(not cols[ci] or (min(cols[ci]) > -BIG and max(cols[ci]) < BIG) for ci in self._summed)
        tr.compact_at = len(ts) + max(len(ts) >> 2, 16)
        return self._values(st, tr)

    def slide(self, st: KeyState, tr: Track, t: int) -> list[float]:
        """Move ``tr`` forward to ``t >= tr.at`` (events enter at ``hi``, leave at each ``lo``); read it."""
        ts = st.ts
        cols = st.columns
        n = len(ts)
        old = hi = tr.hi
        # Each end moves a step or two per event: look there before bisecting (a bisect over a hot key's
        # state costs more, most of it in cache misses).
        if hi < n and ts[hi] < t:
            hi += 1
            if hi < n and ts[hi] < t:
                hi = bisect_left(ts, t, hi + 1)
        tr.at = t
        tr.hi = hi
        los = tr.los
        accs, dists, mins, maxs = tr.accs, tr.dists, tr.mins, tr.maxs
        for wi, w, hop, aggs in self._plan:
            start = (t - w) // hop * hop if hop else t - w
            lo = b = los[wi]
            if b != hi and ts[b] < start:
                b += 1
                if b != hi and ts[b] < start:
                    b = bisect_left(ts, start, b + 1, hi)
                los[wi] = b
            if not aggs:
                continue
            enter = old
            if b >= old:  # none of the window's events stays: start afresh
                if lo != old:
                    for kind, slot, _ in aggs:
                        if kind == SUM:
                            accs[slot].clear()
                        elif kind == DISTINCT:
                            dists[slot].clear()
                        elif kind == MIN:
                            mins[slot].clear()
                        else:
                            maxs[slot].clear()
                enter = b
            elif b != lo:  # [lo, b) leave
                for kind, slot, ci in aggs:
                    col = cols[ci]
                    if kind == SUM:
                        if b - lo == 1:
                            accs[slot].append(-col[lo])
                        else:
                            accs[slot].extend(map(neg, col[lo:b]))
                    elif kind == DISTINCT:
                        d = dists[slot]
                        for v in col[lo:b]:
                            c = d[v] - 1
                            if c:
                                d[v] = c
                            else:
                                del d[v]
                    else:
                        dq = mins[slot] if kind == MIN else maxs[slot]
                        while dq[0] < b:  # the deque keeps the window's last event, old - 1 >= b
                            dq.popleft()
            if enter != hi:  # [enter, hi) enter
                for kind, slot, ci in aggs:
                    col = cols[ci]
                    if kind == SUM:
                        if hi - enter == 1:
                            accs[slot].append(col[enter])
                        else:
                            accs[slot].extend(col[enter:hi])
                    elif kind == DISTINCT:
                        d = dists[slot]
                        for v in col[enter:hi]:
                            d[v] = d.get(v, 0) + 1
                    elif kind == MIN:
                        dq = mins[slot]
                        for k in range(enter, hi):
                            v = col[k]
                            while dq and col[dq[-1]] > v:
                                dq.pop()
                            dq.append(k)
                    else:
                        dq = maxs[slot]
                        for k in range(enter, hi):
                            v = col[k]
                            while dq and col[dq[-1]] < v:
                                dq.pop()
                            dq.append(k)
        return self._values(st, tr)

    def _values(self, st: KeyState, tr: Track) -> list[float]:
        cols = st.columns
        hi = tr.hi
        los, accs = tr.los, tr.accs
        out: list[float] = []
        for code, wi, ci, slot, empty in self._fast:
            lo = los[wi]
            if lo == hi:
                out.append(empty)
            elif code == COUNT:
                out.append(float(hi - lo))
            elif code <= MEAN:  # sum or mean
                acc = accs[slot]
                if len(acc) > _ACC_LIMIT:
                    acc[:] = _exact(acc) if tr.exact else []
                s = math.fsum(acc) if tr.exact else math.fsum(cols[ci][lo:hi])
                if not s and _SIGNED_ZERO:  # a zero's sign depends on the terms: sum the window
                    s = math.fsum(cols[ci][lo:hi])
                out.append(s if code == SUM else s / (hi - lo))
            elif code == LAST:  # the state is ordered by (ts, seq): the newest window event is at hi - 1
                out.append(cols[ci][hi - 1])
            elif code == MAX:
                out.append(cols[ci][tr.maxs[slot][0]])
            elif code == DISTINCT:
                out.append(float(len(tr.dists[slot])))
            else:
                out.append(cols[ci][tr.mins[slot][0]])
        return out

    def fold(self, st: KeyState, tr: Track, t: int, seq: int, values: list[Any]) -> None:
        """:meth:`KeyState.fold` keeping ``tr`` right, with expiry deferred to an amortized compaction."""
        ts, seqs, cols = st.ts, st.seq, st.columns
        n = len(ts)
        if not n or t > ts[-1] or (t == ts[-1] and seq > seqs[-1]):
            i = n
            ts.append(t)
            seqs.append(seq)
            for col, v in zip(cols, values, strict=True):
                col.append(v)
        else:
            lo = bisect_left(ts, t)
            i = bisect_left(seqs, seq, lo, bisect_right(ts, t, lo))
            ts.insert(i, t)
            seqs.insert(i, seq)
            for col, v in zip(cols, values, strict=True):
                col.insert(i, v)
        at = tr.at
        assert at is not None
        if t < at:  # out of order, before the windows' head: it enters those it falls in
            self._entered(st, tr, i, t, at)
        if t > st.max_ts:
            st.max_ts = t
            tr.deferred = True
            if len(ts) >= tr.compact_at:
                self.compact(st, tr)

    def _entered(self, st: KeyState, tr: Track, i: int, t: int, at: int) -> None:
        tr.hi += 1
        cols = st.columns
        for wi, w, hop, aggs in self._plan:
            if t < ((at - w) // hop * hop if hop else at - w):  # before the window: its indices move up
                tr.los[wi] += 1
                for kind, slot, _ in aggs:
                    if kind == MIN:
                        tr.mins[slot] = deque(j + 1 for j in tr.mins[slot])
                    elif kind == MAX:
                        tr.maxs[slot] = deque(j + 1 for j in tr.maxs[slot])
                continue
            for kind, slot, ci in aggs:
                x = cols[ci][i]
                if kind == SUM:
                    tr.accs[slot].append(x)
                elif kind == DISTINCT:
                    d = tr.dists[slot]
                    d[x] = d.get(x, 0) + 1
                elif kind == MIN:
                    tr.mins[slot] = _inserted(tr.mins[slot], cols[ci], i, True)
                else:
                    tr.maxs[slot] = _inserted(tr.maxs[slot], cols[ci], i, False)

    def compact(self, st: KeyState, tr: Track) -> None:
        """Drop the dead events (:meth:`KeyState.expire`) and move ``tr``'s indices down with them."""
        k = st.expire()
        tr.deferred = False
        n = len(st.ts)
        tr.compact_at = n + max(n >> 2, 16)
        if not k or tr.at is None:
            return
        tr.hi -= k
        tr.los = [lo - k for lo in tr.los]
        if min(tr.los, default=0) < 0:  # cannot happen (a window never reaches a dead event): rebuild
            tr.at = None
            return
        tr.mins = [deque(j - k for j in dq) for dq in tr.mins]
        tr.maxs = [deque(j - k for j in dq) for dq in tr.maxs]
