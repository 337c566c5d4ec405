"""Per-key state of the incremental engine, and its checkpoint format.

A :class:`KeyState` holds one key's accepted events that a future window can still see, ordered by
``(ts, seq)``: their timestamps, arrival sequence numbers and one list per column the windowed features
read. ``horizon`` (allowed lateness + the longest window) bounds how far back it keeps events.

Checkpoints never use pickle: a blob is ``magic | version | header length | crc32 | JSON header | arrays``.
The header names the feature set, a fingerprint of its windowed definitions, the columns, every key with
its event count and ``max_ts``, and the values of string-capable (``count_distinct``-only) columns; the
timestamps, sequence numbers and numeric columns follow as little-endian int64/float64 arrays.

    >>> s = KeyState(max_ts=0, horizon=100)
    >>> s.fold(50, 1, [2.5]); s.fold(10, 2, [1.0]); s.fold(300, 3, [4.0])
    >>> s.ts, s.seq, s.columns   # ts 10 and 50 fell out of the horizon when ts 300 arrived
    ([300], [3], [[4.0]])
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import struct
import sys
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from fourfold.errors import FourfoldError

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - an optional speed-up
    _orjson = None  # type: ignore[assignment]
from fourfold.features.definitions import FeatureSet

__all__ = ["FORMAT_VERSION", "Key", "KeyState", "Layout", "StateError", "decode", "encode"]

Key = str | int
FORMAT_VERSION = 1
_MAGIC = b"FFKS"
_PREFIX = struct.Struct("<4sBII")  # magic, version, header length, crc32 of header + arrays
_NUMERIC_AGGS = frozenset({"sum", "mean", "min", "max", "last"})
_INT64 = (-(2**63), 2**63 - 1)


class StateError(FourfoldError):
    """Incremental state that cannot be read, merged or used with this feature set."""

    status = 422


class NoStateError(StateError):
    """There is no state for the key asked for."""

    status = 404


@dataclass(frozen=True, slots=True)
class Layout:
    """What a feature set's state looks like: its columns, how far back it keeps events, a fingerprint.

    The fingerprint covers everything that changes what the state holds (windowed features, their source,
    key and timestamp columns, the allowed lateness), independent of feature order.
    """

    feature_set: str
    fingerprint: str
    columns: tuple[str, ...]
    numeric: tuple[bool, ...]  # per column: must be a finite number (else str or number, count_distinct)
    horizon: int

    @classmethod
    def of(cls, fs: FeatureSet) -> Layout:
        numeric: dict[str, bool] = {}
        for f in fs.windowed:
            if f.column and f.agg != "count":  # a count counts events, whatever its column holds
                numeric[f.column] = numeric.get(f.column, False) or f.agg in _NUMERIC_AGGS
        spec = {
            "lateness_ms": fs.allowed_lateness.ms,
            "features": sorted(
                [f.name, f.source, fs.key_of(f), fs.source(f.source).timestamp, f.agg, f.window.ms,
                 f.column or "", f.hop.ms if f.hop else 0]
                for f in fs.windowed
            ),
        }  # fmt: skip
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode())
        columns = tuple(sorted(numeric))
        return cls(
            fs.name,
            digest.hexdigest()[:16],
            columns,
            tuple(numeric[c] for c in columns),
            fs.allowed_lateness.ms + fs.max_window.ms,
        )


@dataclass(slots=True)
class KeyState:
    """One key's events, ordered by ``(ts, seq)``; events with ``ts < max_ts - horizon`` are dropped."""

    max_ts: int
    horizon: int
    ts: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    columns: list[list[Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def fold(self, t: int, seq: int, values: Sequence[Any]) -> None:
        """Insert one event in ``(ts, seq)`` order, raise ``max_ts`` and drop what fell out of the horizon."""
        ts = self.ts
        cols = self.columns
        if not cols:
            cols = self.columns = [[] for _ in values]
        if not ts or t > ts[-1] or (t == ts[-1] and seq > self.seq[-1]):
            ts.append(t)
            self.seq.append(seq)
            if len(cols) == 1 == len(values):  # one column, the common case: no zip to build
                cols[0].append(values[0])
            else:
                for col, v in zip(cols, values, strict=True):
                    col.append(v)
        else:
            lo = bisect_left(ts, t)
            i = bisect_left(self.seq, seq, lo, bisect_right(ts, t, lo))
            ts.insert(i, t)
            self.seq.insert(i, seq)
            for col, v in zip(self.columns, values, strict=True):
                col.insert(i, v)
        if t > self.max_ts:
            self.max_ts = t
            if ts[0] < t - self.horizon:  # something fell out of the horizon
                self.expire()

    def expire(self) -> int:
        """Drop events with ``ts < max_ts - horizon``; returns how many were dropped."""
        ts = self.ts
        cutoff = self.max_ts - self.horizon
        if not ts or ts[0] >= cutoff:
            return 0
        n = bisect_left(ts, cutoff)
        del ts[:n], self.seq[:n]
        for col in self.columns:
            del col[:n]
        return n

    def events(self) -> list[tuple[int, int, tuple[Any, ...]]]:
        """``(ts, seq, column values)`` per event, in order."""
        return [
            (t, s, tuple(c[i] for c in self.columns))
            for i, (t, s) in enumerate(zip(self.ts, self.seq, strict=True))
        ]

    def merge(self, other: KeyState) -> KeyState:
        """The union of two states of the same key, e.g. from two partitions or replicas.

        Guarantees: events are identified by ``(ts, seq)`` and appear once; ``max_ts`` is the larger one and
        the result is expired against it. So merging is commutative, associative and idempotent, merging an
        older snapshot of a key into its current state changes nothing, and the union of two states that
        split one key's events equals the state that folded them all. It is only meaningful when ``seq``
        identifies events across both sides (one engine's counter, or sequence numbers taken from a shared
        log); two different events with the same ``(ts, seq)`` raise :class:`StateError`.

            >>> a, b = KeyState(0, 10), KeyState(0, 10)
            >>> a.fold(5, 1, [1.0]); b.fold(7, 2, [2.0]); b.fold(5, 1, [1.0])
            >>> a.merge(b).events()
            [(5, 1, (1.0,)), (7, 2, (2.0,))]
        """
        if self.horizon != other.horizon or (
            self.columns and other.columns and len(self.columns) != len(other.columns)
        ):
            raise StateError(
                "cannot merge states of different feature definitions "
                f"(horizon {self.horizon} vs {other.horizon} ms, "
                f"{len(self.columns)} vs {len(other.columns)} columns)"
            )
        union: dict[tuple[int, int], tuple[Any, ...]] = {}
        for t, s, values in self.events() + other.events():
            seen = union.setdefault((t, s), values)
            if seen != values:
                raise StateError(
                    f"cannot merge: two different events share timestamp {t} and sequence number {s}; "
                    "merge only states whose sequence numbers identify events on both sides"
                )
        width = len(self.columns) or len(other.columns)
        merged = KeyState(max(self.max_ts, other.max_ts), self.horizon, columns=[[] for _ in range(width)])
        for (t, s), values in sorted(union.items()):
            merged.ts.append(t)
            merged.seq.append(s)
            for col, v in zip(merged.columns, values, strict=True):
                col.append(v)
        merged.expire()
        return merged


# -- checkpoint format ----------------------------------------------------------------------------------
def _little(a: array[Any]) -> array[Any]:
    if sys.byteorder != "little":
        a.byteswap()
    return a


def _arrays(ts: array[int], seq: array[int], floats: list[array[float]]) -> list[array[Any]]:
    return [ts, seq, *floats]


def encode(layout: Layout, entries: Sequence[tuple[Key, KeyState]], *, kind: str, next_seq: int) -> bytes:
    """Serialize ``entries`` (``kind`` is ``"key"`` or ``"engine"``) for ``layout``'s feature set."""
    ts, seq = array("q"), array("q")
    floats = [array("d") for n in layout.numeric if n]
    keys: list[dict[str, Any]] = []
    for key, st in entries:
        ts.extend(st.ts)
        seq.extend(st.seq)
        cols = st.columns or [[] for _ in layout.columns]
        values: list[list[Any]] = []
        it = iter(floats)
        for col, numeric in zip(cols, layout.numeric, strict=True):
            if numeric:
                next(it).extend(col)
            else:
                values.append(col)
        keys.append({"key": key, "n": len(st.ts), "max_ts": st.max_ts, "values": values})
    # the header {kind, feature_set, fingerprint, columns, next_seq, keys}: its start is the same for every
    # blob of a layout and kind, formatted once (the stream writes a blob per changed key per checkpoint)
    head = _head(layout, kind) + b"%d," % next_seq + _dumps({"keys": keys})[1:]
    body = b"".join([head, *(_little(a).tobytes() for a in _arrays(ts, seq, floats))])
    return _PREFIX.pack(_MAGIC, FORMAT_VERSION, len(head), zlib.crc32(body)) + body


@functools.lru_cache(maxsize=64)
def _head(layout: Layout, kind: str) -> bytes:
    """A blob header up to its ``next_seq`` value."""
    fixed = {"kind": kind, "feature_set": layout.feature_set, "fingerprint": layout.fingerprint,
             "columns": _column_kinds(layout)}  # fmt: skip
    return _dumps(fixed)[:-1] + b',"next_seq":'


@functools.lru_cache(maxsize=64)
def _column_kinds(layout: Layout) -> list[list[str]]:
    return [[c, "f64" if n else "value"] for c, n in zip(layout.columns, layout.numeric, strict=True)]


def _dumps(header: dict[str, Any]) -> bytes:
    """Compact JSON; orjson where installed (the stream writes a blob per changed key per batch)."""
    if _orjson is not None:
        try:
            return bytes(_orjson.dumps(header))  # the values are finite (checked when folded)
        except TypeError:  # an int key beyond 64 bits
            pass
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()


def _corrupt(why: str) -> StateError:
    return StateError(f"incremental state blob is corrupt or not fourfold state: {why}")


def _int(v: Any, what: str, lo: int = _INT64[0]) -> int:
    if type(v) is not int or not lo <= v <= _INT64[1]:
        raise _corrupt(f"{what} must be an integer, got {v!r:.60}")
    return v


def _value(v: Any, col: str) -> Any:
    if type(v) is str or type(v) is int or (type(v) is float and math.isfinite(v)):
        return v
    raise _corrupt(f"column {col!r} holds {v!r:.60}, not a string or a finite number")


def _reject_constant(name: str) -> Any:
    raise _corrupt(f"the header holds {name}")


def decode(layout: Layout, blob: bytes, *, kind: str) -> tuple[list[tuple[Key, KeyState]], int]:
    """Read a blob written by :func:`encode`; refuse anything corrupt or written for other definitions."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise StateError(f"incremental state must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _PREFIX.size or blob[:4] != _MAGIC:
        raise _corrupt(f"it does not start with {_MAGIC!r}")
    _, version, head_len, crc = _PREFIX.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise StateError(
            f"incremental state format version {version} is not supported; this fourfold reads version "
            f"{FORMAT_VERSION}: rebuild the state by replaying the event log"
        )
    body = memoryview(blob)[_PREFIX.size :]
    if head_len > len(body) or zlib.crc32(body) != crc:
        raise _corrupt("checksum mismatch (truncated or altered)")
    try:
        header = json.loads(bytes(body[:head_len]), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise _corrupt(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("kind") not in ("key", "engine"):
        raise _corrupt("the header has no valid 'kind'")
    if header["kind"] != kind:
        raise StateError(
            f"this blob holds {header['kind']} state, not {kind} state: load a key with load_key() "
            "and a whole engine with IncrementalEngine.load()"
        )
    if header.get("feature_set") != layout.feature_set:
        raise StateError(
            f"this state was written for feature set {header.get('feature_set')!r:.80}, "
            f"not {layout.feature_set!r}"
        )
    if header.get("fingerprint") != layout.fingerprint:
        raise StateError(
            f"this state was written for a different definition of feature set {layout.feature_set!r} "
            f"(fingerprint {header.get('fingerprint')!r:.40}, now {layout.fingerprint!r}): its windowed "
            "features, source or allowed lateness changed; rebuild the state by replaying the event log"
        )
    expected = [[c, "f64" if n else "value"] for c, n in zip(layout.columns, layout.numeric, strict=True)]
    if header.get("columns") != expected:
        raise _corrupt(f"columns {header.get('columns')!r:.200} do not match {expected!r}")
    next_seq = _int(header.get("next_seq"), "next_seq", 0)
    keys = header.get("keys")
    if not isinstance(keys, list):
        raise _corrupt("'keys' is not a list")
    n_values = layout.numeric.count(False)
    n_floats = len(layout.columns) - n_values
    counts = [_int(k.get("n") if isinstance(k, dict) else None, "an event count", 0) for k in keys]
    total = sum(counts)
    arrays = body[head_len:]
    if len(arrays) != total * 8 * (2 + n_floats):
        raise _corrupt(f"{len(arrays)} bytes of arrays for {total} events")
    ts, seq = array("q"), array("q")
    floats = [array("d") for _ in range(n_floats)]
    for i, a in enumerate(_arrays(ts, seq, floats)):
        a.frombytes(arrays[i * 8 * total : (i + 1) * 8 * total])
        _little(a)
    entries: list[tuple[Key, KeyState]] = []
    seen: set[Key] = set()
    start = 0
    for k, n in zip(keys, counts, strict=True):
        key = k.get("key")
        if not ((type(key) is str and key) or type(key) is int) or key in seen:
            raise _corrupt(f"invalid or repeated key {key!r:.60}")
        seen.add(key)
        values = k.get("values")
        if (
            not isinstance(values, list)
            or len(values) != n_values
            or any(not isinstance(v, list) or len(v) != n for v in values)
        ):
            raise _corrupt(f"the values of key {key!r:.60} do not match its {n} events")
        st = KeyState(_int(k.get("max_ts"), "max_ts"), layout.horizon)
        st.ts, st.seq = ts[start : start + n].tolist(), seq[start : start + n].tolist()
        it_f, it_v = iter(floats), iter(values)
        for col, numeric in zip(layout.columns, layout.numeric, strict=True):
            if numeric:
                fcol = next(it_f)[start : start + n].tolist()
                if not all(math.isfinite(x) for x in fcol):
                    raise _corrupt(f"column {col!r} of key {key!r:.60} holds a NaN or infinity")
                st.columns.append(fcol)
            else:
                st.columns.append([_value(v, col) for v in next(it_v)])
        if any(a >= b for a, b in pairwise(zip(st.ts, st.seq, strict=True))) or (
            n and (st.ts[-1] > st.max_ts)
        ):
            raise _corrupt(f"the events of key {key!r:.60} are out of order or past its max_ts")
        if n and max(st.seq) >= next_seq:
            raise _corrupt(f"key {key!r:.60} holds sequence numbers at or above next_seq {next_seq}")
        st.expire()
        entries.append((key, st))
        start += n
    return entries, next_seq
