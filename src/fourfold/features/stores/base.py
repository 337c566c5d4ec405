"""The online feature store contract: records, the sync and async protocols, errors and shared helpers.

A store keeps, per ``namespace`` (a feature set's name) and entity id, a set of named values with the
event time of the newest applied write. A write whose event time is older than the stored one is not
applied and comes back in :attr:`WriteResult.stale`; an equal event time is applied (last write wins).
Event times are whole milliseconds, kept exactly.

    >>> from fourfold.features.stores import open_store
    >>> store = open_store("memory://")
    >>> store.write("fraud", {"u1": {"amount_sum_1h": 12.5}}, event_time_ms=1_700_000_000_123)
    WriteResult(written=1, stale=[])
    >>> store.read("fraud", ["u1", "nobody"])[0].values
    {'amount_sum_1h': 12.5}

Errors (each a :class:`~fourfold.errors.FourfoldError`):

    StoreError (500)
    ├── StoreUnavailableError (503)          the backend cannot be reached; names the URL, never a password
    ├── StoreURLError (400, ValueError)      a URL with an unknown scheme or a bad option
    ├── StoreInputError (422, ValueError)    a bad namespace, entity, field, value, event time or TTL
    └── FencedError (409)                    a transaction's fence moved: another writer took over

:meth:`OnlineStore.transact` applies several writes all or none, optionally only while a *fence* (one
stored field) still holds the value the writer last saw: how a stream partition's owner writes its keys'
state together with the input offsets they include, and how a new owner locks out the old one.
"""

from __future__ import annotations

import math
import numbers
import operator
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, SupportsIndex, cast, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit

from fourfold.errors import FourfoldError

__all__ = [
    "SCHEMES",
    "AsyncOnlineStore",
    "Fence",
    "FencedError",
    "InValue",
    "OnlineStore",
    "Record",
    "StoreError",
    "StoreInputError",
    "StoreURLError",
    "StoreUnavailableError",
    "Value",
    "Write",
    "WriteResult",
    "decode_value",
    "encode_value",
    "now_ms",
    "prepare_write",
    "redact_url",
]

#: what a read returns for one field
Value = float | bytes | str
#: what a write accepts (ints and other reals are stored as float)
InValue = float | int | bytes | str
SCHEMES = ("memory://", "sqlite:///path.db", "sqlite://:memory:", "redis://", "rediss://", "unix://")
_MAX_EXACT_MS = 2**53  # Lua (Redis) compares event times as doubles: exact below 2**53


class StoreError(FourfoldError):
    """A feature store operation failed."""

    status = 500


class StoreUnavailableError(StoreError):
    """The store's backend cannot be reached (down, refused, timed out, pool exhausted)."""

    status = 503


class StoreURLError(StoreError, ValueError):
    """A store URL with an unknown scheme or an option that cannot be read."""

    status = 400


class StoreInputError(StoreError, ValueError):
    """A namespace, entity, field, value, event time or TTL that the store cannot accept."""

    status = 422


class FencedError(StoreError):
    """A fenced transaction found the fence moved: nothing was written."""

    status = 409


@dataclass(frozen=True)
class Write:
    """One namespace's part of :meth:`OnlineStore.transact`: the arguments of one ``write``."""

    namespace: str
    rows: Mapping[str, Mapping[str, InValue]]
    event_time_ms: int | Mapping[str, int]


@dataclass(frozen=True)
class Fence:
    """A transaction's condition: ``field`` of ``entity`` in ``namespace`` holds ``value`` now
    (``None``: the entity or the field is absent)."""

    namespace: str
    entity: str
    field: str
    value: Value | None


def check_fence(fence: Fence, held: Value | None) -> None:
    """Raise :class:`FencedError` unless the stored value ``held`` is what ``fence`` expects."""
    if held != fence.value:
        raise FencedError(
            f"the fence {fence.namespace}/{fence.entity}/{fence.field} holds {held!r:.60}, "
            f"not {fence.value!r:.60}: another writer took over"
        )


@dataclass(frozen=True, slots=True)
class Record:
    """What a read returns for one known entity."""

    #: the requested fields that the entity has
    values: dict[str, Value]
    #: event time (ms since the epoch) of the newest applied write: how fresh the values are
    event_time_ms: int
    #: wall-clock time (ms since the epoch) of that write
    written_at_ms: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    """How many entities a write applied, and which it refused because their event time was older."""

    written: int
    stale: list[str] = field(default_factory=list)


@runtime_checkable
class OnlineStore(Protocol):
    """A low-latency key-value store of feature values per entity."""

    def write(
        self,
        namespace: str,
        rows: Mapping[str, Mapping[str, InValue]],
        *,
        event_time_ms: int | Mapping[str, int],
        ttl_s: float | None = None,
    ) -> WriteResult:
        """Merge ``rows`` (entity -> field -> value) into the stored fields; ``ttl_s=None`` keeps the
        entity until deleted, otherwise it expires ``ttl_s`` after this write."""
        ...

    def read(
        self, namespace: str, entities: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[Record | None]:
        """One record per entity, in order, in one round trip; ``None`` for an unknown or expired one."""
        ...

    def delete(self, namespace: str, entities: Sequence[str]) -> int:
        """Remove entities; returns how many existed."""
        ...

    def transact(
        self, writes: Sequence[Write], *, fences: Sequence[Fence] = (), ttl_s: float | None = None
    ) -> list[WriteResult]:
        """Apply every write or none (each with :meth:`write`'s event-time rule); with ``fences``, only
        while every fence holds - else :class:`FencedError` and nothing is written."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncOnlineStore(Protocol):
    """:class:`OnlineStore` for an event loop."""

    async def write(
        self,
        namespace: str,
        rows: Mapping[str, Mapping[str, InValue]],
        *,
        event_time_ms: int | Mapping[str, int],
        ttl_s: float | None = None,
    ) -> WriteResult: ...

    async def read(
        self, namespace: str, entities: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[Record | None]: ...

    async def delete(self, namespace: str, entities: Sequence[str]) -> int: ...

    async def close(self) -> None: ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the userinfo and in a ``password=`` query)."""
    parts = urlsplit(url)
    scheme, sep, rest = url.partition("://")
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        rest = rest.replace(parts.netloc, f"{user.split(':', 1)[0]}:***@{host}", 1)
    if "password" in parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*/")
        rest = rest.replace(parts.query, query, 1)
    return scheme + sep + rest


def check_namespace(namespace: str) -> None:
    if not isinstance(namespace, str) or not namespace or ":" in namespace:
        raise StoreInputError(f"invalid namespace {namespace!r}: use a non-empty string without ':'")


def check_entities(entities: Sequence[str]) -> None:
    if isinstance(entities, str | bytes):
        raise StoreInputError(f"entities must be a sequence of ids, not the single value {entities!r}")
    for entity in entities:
        if not isinstance(entity, str) or not entity:
            raise StoreInputError(f"invalid entity id {entity!r}: use a non-empty string")


def check_fields(fields: Sequence[str] | None) -> None:
    if fields is None:
        return
    if isinstance(fields, str | bytes):
        raise StoreInputError(f"fields must be a sequence of names, not the single value {fields!r}")
    for name in fields:
        if not isinstance(name, str) or not name or name.startswith("__"):
            raise StoreInputError(f"invalid field name {name!r}: use a non-empty string not starting '__'")


def _value(entity: str, name: str, value: object) -> Value:
    if type(value) in (float, str, bytes):  # the common case; subclasses (numpy.float64) are converted
        return cast(Value, value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise StoreInputError(
        f"entity {entity!r}, field {name!r}: cannot store a {type(value).__name__}; "
        "use a number, str or bytes (serialize anything else to bytes)"
    )


def _event_time(entity: str, value: object) -> int:
    if type(value) is int and -_MAX_EXACT_MS < value < _MAX_EXACT_MS:  # the common case, no Protocol check
        return value
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise StoreInputError(
            f"entity {entity!r}: event_time_ms must be an int (ms since the epoch), got {value!r}"
        )
    ms = operator.index(value)
    if not -_MAX_EXACT_MS < ms < _MAX_EXACT_MS:
        raise StoreInputError(f"entity {entity!r}: event_time_ms {value!r} is out of range (|t| < 2**53)")
    return ms


def prepare_write(
    namespace: str,
    rows: Mapping[str, Mapping[str, InValue]],
    event_time_ms: int | Mapping[str, int],
    ttl_s: float | None,
) -> tuple[list[tuple[str, dict[str, Value], int]], int | None]:
    """Checked ``(entity, values, event_time_ms)`` triples and the TTL in ms (``None``: no expiry)."""
    check_namespace(namespace)
    if ttl_s is not None and not (isinstance(ttl_s, numbers.Real) and math.isfinite(ttl_s) and ttl_s > 0):
        raise StoreInputError(f"ttl_s must be a positive number of seconds or None, got {ttl_s!r}")
    ttl_ms = None if ttl_s is None else max(1, math.ceil(float(ttl_s) * 1000))
    times = event_time_ms if isinstance(event_time_ms, Mapping) else None
    shared = _event_time("*", event_time_ms) if times is None else 0
    missing = [e for e in rows if e not in times] if times is not None else []
    if missing:
        raise StoreInputError(f"event_time_ms has no event time for entity(ies) {missing[:5]!r}")
    out: list[tuple[str, dict[str, Value], int]] = []
    plain = (float, str, bytes)
    for entity, fields in rows.items():
        if type(entity) is not str or not entity:
            check_entities((entity,))
        if type(fields) is dict and len(fields) == 1:  # the common case (one state blob), checked inline
            [(name, v)] = fields.items()
            if type(name) is not str or not name or name.startswith("__"):
                check_fields([name])
            values = {name: v if type(v) in plain else _value(entity, name, v)}
        else:
            if not isinstance(fields, Mapping):
                raise StoreInputError(
                    f"entity {entity!r}: expected a mapping of field -> value, got {fields!r}"
                )
            check_fields(list(fields))
            values = {name: _value(entity, name, v) for name, v in fields.items()}
        et = shared if times is None else _event_time(entity, times[entity])
        out.append((entity, values, et))
    return out, ttl_ms


def encode_value(value: Value) -> bytes:
    """Bytes for Redis and SQLite: a float as its ``repr`` (exact, NaN included), str and bytes tagged."""
    if isinstance(value, float):
        return repr(value).encode("ascii")
    if isinstance(value, str):
        return b"s:" + value.encode("utf-8")
    return b"b:" + value


def decode_value(data: bytes) -> Value:
    tag = data[:2]
    if tag == b"b:":
        return data[2:]
    if tag == b"s:":
        return data[2:].decode("utf-8")
    return float(data)
