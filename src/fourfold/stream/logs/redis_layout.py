"""How a sharded log lies in Redis: the ``redis-stream://`` URL, which shard a key goes to, entry ids as
offsets, and the client both the source and the sink of :mod:`fourfold.stream.logs.redis_streams` use
(redis-py, Redis errors as fourfold's, the shard count recorded once per stream)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fourfold.errors import ConflictError, FourfoldError, InvalidOptionError, UnavailableError
from fourfold.extras import require
from fourfold.features.stores.base import redact_url

__all__ = [
    "SEQ_BITS",
    "SEQ_MASK",
    "RedisClient",
    "StreamURL",
    "entry_id",
    "offset_of",
    "parse_redis_stream_url",
    "shard_of",
]

_PURPOSE = "Redis Streams"
SEQ_BITS = 20  # an entry id ms-seq is the offset ms << SEQ_BITS | seq
SEQ_MASK = (1 << SEQ_BITS) - 1


def shard_of(key: bytes, shards: int) -> int:
    """The shard an event with ``key`` is appended to: ``crc32(key) % shards``.

    >>> shard_of(b"u1", 4)
    2
    """
    return zlib.crc32(key) % shards


def offset_of(entry: bytes | str) -> int:
    """A stream entry id ``ms-seq`` as an offset, ``ms << 20 | seq``.

    >>> offset_of(b"1700000000123-5")
    1782579200128974853
    """
    text = entry.decode() if isinstance(entry, bytes) else entry
    ms, _, seq = text.partition("-")
    if int(seq) > SEQ_MASK:
        raise FourfoldError(
            f"the Redis stream entry {text} has a sequence number over 2**20 - 1: fourfold maps ids to "
            f"offsets as ms << 20 | seq; add entries with automatic ids (XADD key * ...)"
        )
    return int(ms) << SEQ_BITS | int(seq)


def entry_id(offset: int) -> str:
    """The stream entry id of ``offset`` (the inverse of :func:`offset_of`).

    >>> entry_id(1782579200128974853)
    '1700000000123-5'
    """
    return f"{offset >> SEQ_BITS}-{offset & SEQ_MASK}"


@dataclass(frozen=True, slots=True)
class StreamURL:
    """A parsed ``redis-stream://`` URL."""

    url: str  # without the password
    redis_url: str  # redis://[:password@]host:port/db?pool options
    stream: str
    shards: int | None
    group: str | None
    block_ms: int
    lease_ms: int
    maxlen: int | None


def _int(url: str, name: str, raw: str | None, low: int = 1) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low:
        raise InvalidOptionError(f"{name} in {url} must be an integer >= {low}, got {raw!r:.40}")
    return value


def parse_redis_stream_url(url: str) -> StreamURL:
    """Split a ``redis-stream://`` URL into the Redis connection and fourfold's options."""
    safe = redact_url(url)
    parts = urlsplit(url)
    db, _, stream = parts.path.lstrip("/").partition("/")
    if parts.scheme != "redis-stream" or not parts.hostname or not db.isdigit() or not stream:
        raise InvalidOptionError(
            "a Redis stream URL is redis-stream://[:password@]host:port/db/name[?shards=N], "
            f"got {safe!r:.200}"
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    shards = _int(safe, "shards", query.pop("shards", None))
    block_ms = _int(safe, "block_ms", query.pop("block_ms", None)) or 100
    lease_ms = _int(safe, "lease_ms", query.pop("lease_ms", None)) or 10_000
    maxlen = _int(safe, "maxlen", query.pop("maxlen", None))
    group = query.pop("group", None)
    if lease_ms < 2 * block_ms:
        raise InvalidOptionError(
            f"lease_ms in {safe} must be at least twice block_ms ({block_ms}): a lease is renewed once per "
            f"read, got {lease_ms}"
        )
    if group is not None and (not group or ":" in group):
        raise InvalidOptionError(f"group in {safe} must be a non-empty name without ':', got {group!r:.60}")
    redis_url = f"redis://{parts.netloc}/{db}" + (f"?{urlencode(query)}" if query else "")
    return StreamURL(safe.split("?")[0], redis_url, stream, shards, group, block_ms, lease_ms, maxlen)


class RedisClient:
    """A redis-py client for a stream URL, and Redis errors as fourfold's."""

    url: str

    def _connect(self, where: StreamURL, what: str) -> Any:
        redis = require("redis", "redis", _PURPOSE)
        self.url, self._what = where.url, what
        self._unavailable: tuple[type[Exception], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._failed: type[Exception] = redis.exceptions.RedisError
        parsers = require("redis._parsers", "redis", _PURPOSE)
        hiredis = bool(require("redis.utils", "redis", _PURPOSE).HIREDIS_AVAILABLE)
        retry = require("redis.retry", "redis", _PURPOSE).Retry(
            require("redis.backoff", "redis", _PURPOSE).NoBackoff(), 1
        )
        # a blocking XREAD must not outlast the socket timeout
        defaults = {"socket_timeout": where.block_ms / 1000 + 1.0, "socket_connect_timeout": 1.0}
        try:
            pool = redis.ConnectionPool.from_url(
                where.redis_url,
                parser_class=parsers._HiredisParser if hiredis else parsers._RESP2Parser,
                retry=retry,
                **defaults,
            )
        except ValueError as exc:
            raise InvalidOptionError(f"cannot use the Redis URL {where.url!r}: {exc}") from exc
        pool.connection_kwargs["decode_responses"] = False
        self.client: Any = redis.Redis(connection_pool=pool)
        return self.client

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._unavailable as exc:
            raise UnavailableError(f"the Redis {self._what} {self.url} is unavailable: {exc}") from exc
        except self._failed as exc:
            raise FourfoldError(f"the Redis {self._what} {self.url} failed: {exc}") from exc

    def _check_shards(self, stream: str, shards: int) -> None:
        key = f"{stream}:shards"
        with self._errors():
            self.client.set(key, shards, nx=True)
            recorded = int(self.client.get(key) or shards)
        if recorded != shards:
            raise ConflictError(
                f"the Redis stream {self.url} has {recorded} shards ({key}), not {shards}: keys would land "
                f"in other shards; use shards={recorded} or a new stream name"
            )
