"""The incremental engine: windowed features computed per key, one event at a time, in pure Python.

It is the reference for the streaming and online patterns, and the offline engine must agree with it
event for event. Per event ``e`` (key ``k``, time ``t``), in arrival order:

1. validate: a key, a timestamp, finite numbers in the numeric columns and request fields, a string or
   finite number in ``count_distinct`` columns - else :class:`Rejected`, and nothing changes;
2. if ``t < max_ts(k) - allowed_lateness``: :class:`Late`, not folded, no features;
3. read: each windowed feature over ``W`` aggregates k's folded events with ``t - W <= ts < t``;
4. fold ``e`` into k's state and drop events no future accepted event can see.

Timestamps are int milliseconds (or a datetime, naive meaning UTC, or a numpy datetime64; sub-ms floored).

    >>> fs = FeatureSet.from_dict({
    ...     "name": "fraud", "allowed_lateness": "1m",
    ...     "entities": [{"name": "user", "join_key": "user_id"}],
    ...     "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
    ...     "features": [
    ...         {"name": "n_1h", "source": "tx", "agg": "count", "window": "1h"},
    ...         {"name": "sum_1h", "source": "tx", "agg": "sum", "column": "amount", "window": "1h"},
    ...     ],
    ... })
    >>> engine = IncrementalEngine(fs)
    >>> engine.process({"user_id": "u1", "ts": 1_000, "amount": 5.0})
    Scored(key='u1', ts=1000, values={'n_1h': 0.0, 'sum_1h': 0.0})
    >>> engine.process({"user_id": "u1", "ts": 2_000, "amount": 7.0}).values
    {'n_1h': 1.0, 'sum_1h': 5.0}
    >>> engine.read("u1", 3_000)
    {'n_1h': 2.0, 'sum_1h': 12.0}
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fourfold.errors import InputError
from fourfold.features.definitions import (
    DefinitionError,
    EventSource,
    FeatureSet,
    RequestFeature,
    WindowedFeature,
)
from fourfold.features.state import Key, KeyState, Layout, NoStateError, StateError, decode, encode

__all__ = ["IncrementalEngine", "Late", "Rejected", "Scored", "StateError", "Timestamp", "timestamp_ms"]

Timestamp = int | datetime | np.datetime64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TS_MIN, _TS_MAX = -(2**63), 2**63 - 1
_MISSING: Any = object()
_NAN = math.nan
_COUNT, _SUM, _MEAN, _MIN, _MAX, _DISTINCT, _LAST = range(7)
_CODES = {"count": _COUNT, "sum": _SUM, "mean": _MEAN, "min": _MIN, "max": _MAX,
          "count_distinct": _DISTINCT, "last": _LAST}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Scored:
    """An accepted event and its features, in the feature set's order (entity features are NaN here)."""

    key: Key
    ts: int
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class Late:
    """An event more than the allowed lateness behind its key's newest timestamp: not folded, no features."""

    lateness_ms: int
    event: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid event; ``reason`` names the field and the value. Nothing was changed."""

    reason: str
    event: Mapping[str, Any]


def _show(v: Any) -> str:
    return "None" if v is None else f"{type(v).__name__} {v!r:.80}"


def timestamp_ms(value: Any) -> int:
    """``value`` as int milliseconds since the epoch; raises ``ValueError`` naming what it got.

    >>> timestamp_ms(datetime(1970, 1, 1, 0, 0, 1, 999)), timestamp_ms(np.datetime64(-1, "us"))
    (1000, -1)
    """
    if type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        t = int(value)
    elif isinstance(value, datetime):
        d = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
        t = (d.days * 86_400 + d.seconds) * 1000 + d.microseconds // 1000  # floors: microseconds >= 0
    elif isinstance(value, np.datetime64) and not np.isnat(value):
        t = int(value.astype("datetime64[ms]").astype(np.int64))  # numpy floors too
    else:
        raise ValueError(f"must be int milliseconds, a datetime or a numpy datetime64, got {_show(value)}")
    if not _TS_MIN <= t <= _TS_MAX:
        raise ValueError(f"is out of the int64 millisecond range, got {_show(value)}")
    return t


def _number(v: Any) -> float | None:
    """``v`` as a finite float, or None; bools are not numbers here."""
    if type(v) is float:
        return v if v - v == 0.0 else None  # false for NaN and infinities
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        try:
            f = float(v)
        except OverflowError:
            return None
        return f if f - f == 0.0 else None
    return None


def _distinct_value(v: Any) -> str | int | float | None:
    if type(v) is str or type(v) is int:
        return v
    if isinstance(v, str):
        return str(v)
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    return _number(v)


def _source(fs: FeatureSet) -> EventSource:
    names = sorted({f.source for f in fs.windowed})
    if len(names) > 1:
        raise DefinitionError(
            f"feature set {fs.name!r}: the incremental engine computes windows over one event source, "
            f"but the windowed features read {', '.join(repr(n) for n in names)}; split the feature set"
        )
    if not names and len(fs.sources) != 1:
        raise DefinitionError(
            f"feature set {fs.name!r} has no windowed feature and {len(fs.sources)} sources: "
            "the incremental engine cannot tell which source's key and timestamp to use"
        )
    return fs.source(names[0]) if names else fs.sources[0]


class IncrementalEngine:
    """Per-key state updated one event at a time (read, then fold); see the module docstring.

    ``state``, ``dump_key``/``load_key`` and ``dump``/``load`` give access to the state for checkpoints;
    blobs are a versioned binary format (no pickle) bound to the feature set's windowed definitions.
    Not thread-safe: give each shard of keys one engine, and feed a key's events in arrival order.
    Per event it costs two bisects per window plus C-level passes over the events in each window.
    """

    def __init__(self, feature_set: FeatureSet) -> None:
        source = _source(feature_set)
        self.feature_set = feature_set
        self.key_column = feature_set.entity(source.entity).join_key
        self.timestamp_column = source.timestamp
        self.layout = Layout.of(feature_set)
        self._lateness = feature_set.allowed_lateness.ms
        self._states: dict[Key, KeyState] = {}
        self._seq = 0
        self._columns = tuple(zip(self.layout.columns, self.layout.numeric, strict=True))
        self._request = tuple(f.field for f in feature_set.request)
        windows = sorted({(f.window.ms, f.hop.ms if f.hop else 0) for f in feature_set.windowed})
        col_index = {c: i for i, c in enumerate(self.layout.columns)}
        self._windows = tuple(windows)
        self._ops = tuple(
            (
                _CODES[f.agg],
                windows.index((f.window.ms, f.hop.ms if f.hop else 0)),
                col_index.get(f.column or "", -1) if f.agg != "count" else -1,
            )
            for f in feature_set.windowed
        )
        self._windowed_names = tuple(f.name for f in feature_set.windowed)
        self._empty = tuple(f.empty_value for f in feature_set.windowed)
        # (name, 0 windowed / 1 request / 2 entity, index) in the feature set's order
        w = r = 0
        out: list[tuple[str, int, int]] = []
        for f in feature_set.features:
            if isinstance(f, WindowedFeature):
                out.append((f.name, 0, w))
                w += 1
            elif isinstance(f, RequestFeature):
                out.append((f.name, 1, r))
                r += 1
            else:  # an entity feature: the online store supplies it
                out.append((f.name, 2, 0))
        self._out = tuple(out)

    # -- the per-event path ------------------------------------------------------------------------------
    def process(self, event: Mapping[str, Any]) -> Scored | Late | Rejected:
        """Validate, read the features of ``event`` from its key's state, then fold it in."""
        parsed = self._validate(event)
        if isinstance(parsed, str):
            return Rejected(parsed, event)
        key, t, values, request = parsed
        st = self._states.get(key)
        if st is not None and t < st.max_ts - self._lateness:
            return Late(st.max_ts - self._lateness - t, event)
        windowed = self._aggregate(st, t)
        out: dict[str, float] = {}
        for name, kind, i in self._out:
            out[name] = windowed[i] if kind == 0 else request[i] if kind == 1 else _NAN
        self._seq += 1
        if st is None:
            self._states[key] = KeyState(
                t, self.layout.horizon, [t], [self._seq], [[v] for v in values]
            )  # fmt: skip
        else:
            st.fold(t, self._seq, values)
        return Scored(key, t, out)

    def read(self, key: Key, at_ms: Timestamp) -> dict[str, float]:
        """The windowed features of ``key`` as of ``at_ms`` (window ``[at - W, at)``), without folding.

        Equals what :meth:`process` gives an event of ``key`` at ``at_ms`` that is not late; for earlier
        times the events it would need may already have been dropped. An unknown key reads empty windows.
        """
        try:
            t = timestamp_ms(at_ms)
        except ValueError as exc:
            raise InputError(f"read(): the time {exc}") from None
        return dict(zip(self._windowed_names, self._aggregate(self._states.get(key), t), strict=True))

    def _validate(self, event: Mapping[str, Any]) -> tuple[Key, int, list[Any], list[float]] | str:
        key = event.get(self.key_column)
        if type(key) is not str or not key:
            if isinstance(key, numbers.Integral) and not isinstance(key, bool):
                key = int(key)
            elif isinstance(key, str) and key:
                key = str(key)
            else:
                if key is None:
                    return f"key field {self.key_column!r} is missing"
                need = "must be a non-empty string or an integer"
                return f"key field {self.key_column!r} {need}, got {_show(key)}"
        raw = event.get(self.timestamp_column)
        if type(raw) is int and _TS_MIN <= raw <= _TS_MAX:
            t: int = raw
        elif raw is None:
            return f"timestamp field {self.timestamp_column!r} is missing"
        else:
            try:
                t = timestamp_ms(raw)
            except ValueError as exc:
                return f"timestamp field {self.timestamp_column!r} {exc}"
        values: list[Any] = []
        for name, numeric in self._columns:
            v = event.get(name, _MISSING)
            if v is _MISSING:
                return f"field {name!r} is missing"
            if numeric:
                if type(v) is float and v - v == 0.0:  # the common case, without a call
                    values.append(v)
                    continue
                x = float(v) if type(v) is int and -(2**53) <= v <= 2**53 else _number(v)
                if x is None:
                    return f"field {name!r} must be a finite number, got {_show(v)}"
                values.append(x)
            else:
                d = _distinct_value(v)
                if d is None:
                    return f"field {name!r} must be a string or a finite number, got {_show(v)}"
                values.append(d)
        request: list[float] = []
        for name in self._request:
            v = event.get(name, _MISSING)
            if v is _MISSING:
                return f"field {name!r} is missing"
            x = float(v) if type(v) is int and -(2**53) <= v <= 2**53 else _number(v)
            if x is None:
                return f"field {name!r} must be a finite number, got {_show(v)}"
            request.append(x)
        return key, t, values, request

    def _aggregate(self, st: KeyState | None, t: int) -> list[float]:
        if st is None:
            return list(self._empty)
        ts = st.ts
        hi = bisect_left(ts, t)
        if hi == 0:
            return list(self._empty)
        los = [bisect_left(ts, (t - w) // hop * hop if hop else t - w, 0, hi) for w, hop in self._windows]
        cols = st.columns
        out: list[float] = []
        for (code, wi, ci), empty in zip(self._ops, self._empty, strict=True):
            lo = los[wi]
            if lo == hi:
                out.append(empty)
            elif code == _COUNT:
                out.append(float(hi - lo))
            elif code == _SUM:
                out.append(math.fsum(cols[ci][lo:hi]))
            elif code == _MEAN:
                out.append(math.fsum(cols[ci][lo:hi]) / (hi - lo))
            elif code == _MIN:
                out.append(min(cols[ci][lo:hi]))
            elif code == _MAX:
                out.append(max(cols[ci][lo:hi]))
            elif code == _DISTINCT:
                out.append(float(len(set(cols[ci][lo:hi]))))
            else:  # last: the state is ordered by (ts, seq), so the newest window event is at hi - 1
                out.append(cols[ci][hi - 1])
        return out

    # -- state access and checkpoints --------------------------------------------------------------------
    def state(self, key: Key) -> KeyState | None:
        """The live state of ``key`` (treat it as read-only), or None for a key never seen."""
        return self._states.get(key)

    def keys(self) -> Iterable[Key]:
        return self._states.keys()

    def put_state(self, key: Key, state: KeyState) -> None:
        """Use ``state`` (e.g. decoded earlier) as ``key``'s state, as it is: folding changes it."""
        self._states[key] = state

    def drop_key(self, key: Key) -> None:
        """Forget ``key``'s state (e.g. after writing it to an online store)."""
        self._states.pop(key, None)

    def dump_key(self, key: Key) -> bytes:
        """One key's state as a blob for :meth:`load_key`."""
        st = self._states.get(key)
        if st is None:
            raise NoStateError(f"there is no state for key {key!r:.80}")
        return encode(self.layout, [(key, st)], kind="key", next_seq=self._seq + 1)

    def load_key(self, key: Key, blob: bytes) -> None:
        """Replace ``key``'s state with one from :meth:`dump_key` of an engine with the same definitions."""
        entries, next_seq = decode(self.layout, blob, kind="key")
        if len(entries) != 1:
            raise StateError(f"a key blob must hold one key, this one holds {len(entries)}")
        [(stored, st)] = entries
        if stored != key:
            raise StateError(f"this blob holds the state of key {stored!r:.80}, not of {key!r:.80}")
        self._states[key] = st
        self._seq = max(self._seq, next_seq - 1)

    def dump(self) -> bytes:
        """Every key's state and the sequence counter, as a blob for :meth:`load`."""
        return encode(self.layout, list(self._states.items()), kind="engine", next_seq=self._seq + 1)

    @classmethod
    def load(cls, feature_set: FeatureSet, blob: bytes) -> IncrementalEngine:
        """An engine for ``feature_set`` continuing from a :meth:`dump`; refuses other definitions."""
        engine = cls(feature_set)
        entries, next_seq = decode(engine.layout, blob, kind="engine")
        engine._states = dict(entries)
        engine._seq = next_seq - 1
        return engine
