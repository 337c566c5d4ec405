"""The incremental engine's event rules: what an event must hold - a key, a timestamp, the columns the
windowed features read, the request fields - and the reason when it does not (``validate``), with the
common event's answer compiled once per feature set (``plain``), property-tested to agree.

    >>> rules = EventRules("user_id", "ts", (("amount", True),), ())
    >>> rules.validate({"user_id": "u1", "ts": 5, "amount": 2.5})
    ('u1', 5, [2.5], [])
    >>> rules.validate({"user_id": "u1", "amount": 2.5})
    "timestamp field 'ts' is missing"
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fourfold.features.sliding import BIG
from fourfold.features.state import Key

__all__ = ["EventRules", "show", "timestamp_ms"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TS_MIN, _TS_MAX = -(2**63), 2**63 - 1
_MISSING: Any = object()


def show(v: Any) -> str:
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
        raise ValueError(f"must be int milliseconds, a datetime or a numpy datetime64, got {show(value)}")
    if not _TS_MIN <= t <= _TS_MAX:
        raise ValueError(f"is out of the int64 millisecond range, got {show(value)}")
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


class EventRules:
    """The rules for one feature set's events (its key and timestamp fields, ``(column, numeric)`` pairs
    and request fields). ``huge`` is set when the last validated event had a number too large for the
    running sums (the engine then takes the exact path for that key)."""

    def __init__(
        self, key: str, ts: str, columns: tuple[tuple[str, bool], ...], request: tuple[str, ...]
    ) -> None:
        self.key, self.ts, self.columns, self.request = key, ts, columns, request
        self.huge = False
        self.plain = _plain_event(key, ts, columns, request)

    def about_key_or_time(self, reason: str) -> bool:
        """Whether ``reason`` (from :meth:`validate`) is about the key or the timestamp field."""
        return reason.startswith((f"key field {self.key!r}", f"timestamp field {self.ts!r}"))

    def validate(self, event: Mapping[str, Any]) -> tuple[Key, int, list[Any], list[float]] | str:
        key = event.get(self.key)
        if type(key) is not str or not key:
            if isinstance(key, numbers.Integral) and not isinstance(key, bool):
                key = int(key)
            elif isinstance(key, str) and key:
                key = str(key)
            else:
                if key is None:
                    return f"key field {self.key!r} is missing"
                need = "must be a non-empty string or an integer"
                return f"key field {self.key!r} {need}, got {show(key)}"
        raw = event.get(self.ts)
        if type(raw) is int and _TS_MIN <= raw <= _TS_MAX:
            t: int = raw
        elif raw is None:
            return f"timestamp field {self.ts!r} is missing"
        else:
            try:
                t = timestamp_ms(raw)
            except ValueError as exc:
                return f"timestamp field {self.ts!r} {exc}"
        values: list[Any] = []
        for name, numeric in self.columns:
            v = event.get(name, _MISSING)
            if v is _MISSING:
                return f"field {name!r} is missing"
            if numeric:
                if type(v) is float and -1e300 < v < 1e300:  # the common case, without a call (BIG)
                    values.append(v)
                    continue
                x = float(v) if type(v) is int and -(2**53) <= v <= 2**53 else _number(v)
                if x is None:
                    return f"field {name!r} must be a finite number, got {show(v)}"
                if not -BIG < x < BIG:
                    self.huge = True
                values.append(x)
            else:
                d = _distinct_value(v)
                if d is None:
                    return f"field {name!r} must be a string or a finite number, got {show(v)}"
                values.append(d)
        request: list[float] = []
        for name in self.request:
            v = event.get(name, _MISSING)
            if type(v) is float and -BIG < v < BIG:  # the common case, without a call
                request.append(v)
                continue
            if v is _MISSING:
                return f"field {name!r} is missing"
            x = float(v) if type(v) is int and -(2**53) <= v <= 2**53 else _number(v)
            if x is None:
                return f"field {name!r} must be a finite number, got {show(v)}"
            request.append(x)
        return key, t, values, request


def _plain_event(key: str, ts: str, columns: tuple[tuple[str, bool], ...], request: tuple[str, ...]) -> Any:
    """``event -> (key, t, values, request) | None``: :meth:`IncrementalEngine._validate`'s answer for the
    common event - a non-empty string key, an int timestamp, plain floats under ``BIG`` in the numeric
    columns and request fields - as one compiled expression; None sends any other event to the rules.
    (Only numeric columns: a count_distinct column takes the rules' path.)"""
    if not all(numeric for _, numeric in columns):
        return lambda event: None
    names = [name for name, _ in columns] + list(request)
    gets = "".join(f"v{i} = event.get({n!r}); " for i, n in enumerate(names))
    tests = "".join(f" and type(v{i}) is float and -BIG < v{i} < BIG" for i in range(len(names)))
    cols = ", ".join(f"v{i}" for i in range(len(columns)))
    req = ", ".join(f"v{i}" for i in range(len(columns), len(names)))
    source = (
        f"def plain(event):\n"
        f"    k = event.get({key!r}); t = event.get({ts!r}); {gets}\n"
        f"    if type(k) is str and k and type(t) is int and TS_MIN <= t <= TS_MAX{tests}:\n"
        f"        return k, t, [{cols}], [{req}]\n"
        f"    return None\n"
    )
    scope: dict[str, Any] = {"BIG": BIG, "TS_MIN": _TS_MIN, "TS_MAX": _TS_MAX}
    exec(source, scope)  # the names are repr()-quoted literals
    return scope["plain"]
