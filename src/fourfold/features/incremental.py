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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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
from fourfold.features.event_rules import EventRules, show, timestamp_ms
from fourfold.features.sliding import Track
from fourfold.features.state import (
    Key,
    KeyState,
    Layout,
    NoStateError,
    StateError,
    decode,
    encode,
)
from fourfold.features.windows import Windows

__all__ = [
    "IncrementalEngine",
    "Late",
    "Processed",
    "Rejected",
    "Scored",
    "StateError",
    "Timestamp",
    "timestamp_ms",
]

Timestamp = int | datetime | np.datetime64
_NAN = math.nan
_SEQ_END = 2**63  # sequence numbers are stored as int64
_TRACK_MIN = 48  # events a key's state holds before its windows slide (below, bisects and passes are cheaper)


@dataclass(frozen=True, slots=True)
class Scored:
    """An accepted event and its features, in the feature set's order (entity features are NaN here)."""

    key: Key
    ts: int
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class Processed:
    """What :meth:`IncrementalEngine.process_many` made of a batch: per accepted event (in order) its index
    in the batch and its key; per windowed feature the accepted events' values; the refused events."""

    index: list[int]
    keys: list[Key]
    columns: dict[str, list[float]]
    refused: list[tuple[int, Late | Rejected]]


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


def _seq_number(seq: Any) -> int:
    if isinstance(seq, numbers.Integral) and not isinstance(seq, bool) and 0 < int(seq) < _SEQ_END:
        return int(seq)
    raise ValueError(f"seq must be an int from 1 to 2**63 - 1 (the event's arrival number), got {show(seq)}")


class IncrementalEngine:
    """Per-key state updated one event at a time (read, then fold); see the module docstring.

    ``state``, ``dump_key``/``load_key`` and ``dump``/``load`` give access to the state for checkpoints;
    blobs are a versioned binary format (no pickle) bound to the feature set's windowed definitions.
    Not thread-safe: give each shard of keys one engine, and feed a key's events in arrival order.

    Per in-order event (``t`` at or after its key's newest timestamp) the cost is O(1) amortized, however
    many events its windows hold: each key keeps, per distinct window, a range of its events that slides
    forward with the event time and running aggregates over it (exact sums, value counts, monotonic
    deques for min and max), so each event enters and leaves each window once. An out-of-order event
    reads its own windows with bisects and C-level passes over them, and is folded into the ranges it
    falls in. The values are exactly those of those passes (``math.fsum``, ``min``, ``max``, ``set``).
    """

    def __init__(
        self, feature_set: FeatureSet, *, renumber: bool = False, request_fields: bool = True
    ) -> None:
        """``request_fields`` False: the request fields are not the engine's to check - the caller's
        model check does, with its own reasons (the stream processor) - and :meth:`process` leaves them
        out; the columns the windows read are checked either way.

        ``renumber``: an event whose sequence number is not above its key's newest - the key's state
        was written by another writer, e.g. ``OnlineFeatures.materialize`` of a batch job, numbering its
        events its own way - takes the number after the newest instead of raising. Arrival order is
        kept (it came after every event the state holds), and it is deterministic: a restart from a
        checkpoint has the same state and assigns the same numbers. The stream processor sets both
        (its numbers are input offsets, which start again with every log)."""
        source = _source(feature_set)
        self._renumber = renumber
        self.feature_set = feature_set
        self.key_column = feature_set.entity(source.entity).join_key
        self.timestamp_column = source.timestamp
        self.layout = Layout.of(feature_set)
        self._lateness = feature_set.allowed_lateness.ms
        self._states: dict[Key, KeyState] = {}
        self._tracks: dict[Key, Track] = {}
        self._seq = 0
        self._track_min = _TRACK_MIN
        self._columns = tuple(zip(self.layout.columns, self.layout.numeric, strict=True))
        self._request = tuple(f.field for f in feature_set.request) if request_fields else ()
        self._rules = EventRules(self.key_column, self.timestamp_column, self._columns, self._request)
        self._plain, self._validate = self._rules.plain, self._rules.validate
        windows = Windows(feature_set, self.layout)
        self._windowed_names, self._empty = windows.names, windows.empty
        self._aggregate = windows.at  # bound once: the per-event path reads short states through it
        self._sliding = windows.sliding()
        # (name, 0 windowed / 1 request / 2 entity, index) in the feature set's order
        w = r = 0
        out: list[tuple[str, int, int]] = []
        for f in feature_set.features:
            if isinstance(f, WindowedFeature):
                out.append((f.name, 0, w))
                w += 1
            elif isinstance(f, RequestFeature):
                if request_fields:  # else the caller's check has them: process() leaves them out
                    out.append((f.name, 1, r))
                    r += 1
            else:  # an entity feature: the online store supplies it
                out.append((f.name, 2, 0))
        self._out = tuple(out)

    @property
    def numeric_columns(self) -> frozenset[str]:
        """The event fields the windows read as numbers: an accepted event holds a finite one in each."""
        return frozenset(c for c, numeric in self._columns if numeric)

    def about_key_or_time(self, reason: str) -> bool:
        """Whether a :class:`Rejected` reason is about the event's key or timestamp (not a value)."""
        return self._rules.about_key_or_time(reason)

    # -- the per-event path ------------------------------------------------------------------------------
    def process(self, event: Mapping[str, Any], seq: int | None = None) -> Scored | Late | Rejected:
        """Validate, read the features of ``event`` from its key's state, then fold it in.

        ``seq`` is the event's arrival number (an int >= 1, e.g. its log offset + 1), which orders events
        with equal timestamps; it must be greater than every sequence number the key has had, else
        ``ValueError``. Without it the engine numbers events itself, above every number it has seen.
        """
        r = self._step(event, seq)
        if not isinstance(r, tuple):
            return r
        key, t, windowed, request = r
        out: dict[str, float] = {}
        for name, kind, i in self._out:
            out[name] = windowed[i] if kind == 0 else request[i] if kind == 1 else _NAN
        return Scored(key, t, out)

    def process_many(self, events: Sequence[Mapping[str, Any]], seqs: Sequence[int]) -> Processed:
        """:meth:`process` for each event in turn (``seqs[i]`` is ``events[i]``'s), the outcome as columns:
        the accepted events' indices, keys and windowed values, and the refused ones. The same steps,
        without an object per event (the stream processor's path)."""
        index: list[int] = []
        keys: list[Key] = []
        rows: list[list[float]] = []
        refused: list[tuple[int, Late | Rejected]] = []
        step = self._step
        for i, (event, seq) in enumerate(zip(events, seqs, strict=True)):
            r = step(event, seq)
            if isinstance(r, tuple):
                index.append(i)
                keys.append(r[0])
                rows.append(r[2])
            else:
                refused.append((i, r))
        names = self._windowed_names
        columns = (
            dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))
            if rows
            else {n: [] for n in names}
        )
        return Processed(index, keys, columns, refused)

    def _step(
        self, event: Mapping[str, Any], seq: int | None
    ) -> tuple[Key, int, list[float], list[float]] | Late | Rejected:
        """:meth:`process` up to its result: (key, time, windowed values, request values) or why not."""
        if seq is not None and (type(seq) is not int or not 0 < seq < _SEQ_END):
            seq = _seq_number(seq)
        parsed = self._plain(event)
        if parsed is None:  # not the common shape: every rule, with the reason
            parsed = self._validate(event)
        if isinstance(parsed, str):
            self._rules.huge = False
            return Rejected(parsed, event)
        key, t, values, request = parsed
        st = self._states.get(key)
        tr = None
        if st is None:
            windowed = list(self._empty)
        else:
            tr = self._tracks.get(key)
            if seq is not None:
                if tr is None:
                    tr = self._tracks[key] = Track()
                if tr.newest is None:
                    tr.newest = max(st.seq, default=0)
                if seq <= tr.newest and self._renumber:
                    seq = tr.newest + 1
                elif seq <= tr.newest:
                    raise ValueError(
                        f"seq {seq} of an event of key {key!r:.80} is not greater than the key's newest "
                        f"seq {tr.newest}: give each key's events increasing sequence numbers"
                    )
            if t < st.max_ts - self._lateness:
                self._rules.huge = False
                return Late(st.max_ts - self._lateness - t, event)
            if tr is not None and tr.at is not None and t >= tr.at:
                windowed = self._sliding.slide(st, tr, t)
            elif t >= st.max_ts and len(st.ts) >= self._track_min:  # in order: from now on they slide
                if tr is None:
                    tr = self._tracks[key] = Track()
                windowed = self._sliding.build(st, tr, t)
            else:
                windowed = self._aggregate(st, t)
        if self._rules.huge:
            self._rules.huge = False
            if tr is not None:
                tr.exact = False
        if seq is None:
            self._seq += 1
            seq = self._seq
        elif seq > self._seq:
            self._seq = seq
        if st is None:
            self._states[key] = KeyState(t, self.layout.horizon, [t], [seq], [[v] for v in values])
        elif tr is None:
            st.fold(t, seq, values)
        else:
            tr.newest = seq
            if tr.at is None:
                st.fold(t, seq, values)
            else:
                self._sliding.fold(st, tr, t, seq, values)
        return key, t, windowed, request

    def read(self, key: Key, at_ms: Timestamp) -> dict[str, float]:
        """The windowed features of ``key`` as of ``at_ms`` (window ``[at - W, at)``), without folding.

        Equals what :meth:`process` gives an event of ``key`` at ``at_ms`` that is not late; for earlier
        times the events it would need may already have been dropped. An unknown key reads empty windows.
        """
        try:
            t = timestamp_ms(at_ms)
        except ValueError as exc:
            raise InputError(f"read(): the time {exc}") from None
        return dict(zip(self._windowed_names, self._aggregate(self._settled(key), t), strict=True))

    def _settled(self, key: Key) -> KeyState | None:
        """``key``'s state with its deferred expiry done: what eager expiry would hold."""
        st = self._states.get(key)
        if st is not None:
            tr = self._tracks.get(key)
            if tr is not None and tr.deferred:
                self._sliding.compact(st, tr)
        return st

    # -- state access and checkpoints --------------------------------------------------------------------
    def state(self, key: Key) -> KeyState | None:
        """The live state of ``key``, or None for a key never seen.

        Treat it as read-only: the engine keeps running aggregates over it. To change a key's state, make
        a new one (e.g. :meth:`KeyState.merge`) and :meth:`put_state` it."""
        return self._settled(key)

    def keys(self) -> Iterable[Key]:
        return self._states.keys()

    def put_state(self, key: Key, state: KeyState) -> None:
        """Use ``state`` (e.g. decoded earlier) as ``key``'s state, as it is: folding changes it."""
        self._states[key] = state
        self._tracks.pop(key, None)
        self._seq = max(self._seq, max(state.seq, default=0))

    def drop_key(self, key: Key) -> None:
        """Forget ``key``'s state (e.g. after writing it to an online store)."""
        self._states.pop(key, None)
        self._tracks.pop(key, None)

    def dump_key(self, key: Key) -> bytes:
        """One key's state as a blob for :meth:`load_key`."""
        st = self._settled(key)
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
        self._tracks.pop(key, None)
        self._seq = max(self._seq, next_seq - 1)

    def dump(self) -> bytes:
        """Every key's state and the sequence counter, as a blob for :meth:`load`."""
        for key, tr in self._tracks.items():
            if tr.deferred:
                self._sliding.compact(self._states[key], tr)
        return encode(self.layout, list(self._states.items()), kind="engine", next_seq=self._seq + 1)

    @classmethod
    def load(cls, feature_set: FeatureSet, blob: bytes) -> IncrementalEngine:
        """An engine for ``feature_set`` continuing from a :meth:`dump`; refuses other definitions."""
        engine = cls(feature_set)
        entries, next_seq = decode(engine.layout, blob, kind="engine")
        engine._states = dict(entries)
        engine._seq = next_seq - 1
        return engine
