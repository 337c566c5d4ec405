"""The prediction cache: an in-process LRU with a TTL, keyed by model version and the exact feature vector.

A new model version never reads an old version's entries: the version is part of the key.

    >>> import numpy as np
    >>> c = PredictionCache(size=2, ttl_s=60)
    >>> c.put("3", np.array([1.0, 2.0]), {"score": 0.9})
    >>> c.get("3", np.array([1.0, 2.0])), c.get("4", np.array([1.0, 2.0]))
    ({'score': 0.9}, None)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PredictionCache"]


class PredictionCache:
    """At most ``size`` entries (0: no cache), each for ``ttl_s`` seconds after its ``put``. ``clock`` gives
    the time in seconds the TTL is measured on (``time.monotonic`` unless given; tests pass a fake one)."""

    def __init__(
        self, size: int = 10_000, ttl_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if size < 0 or ttl_s <= 0:
            raise ValueError(f"cache size must be >= 0 and ttl > 0, got size={size}, ttl_s={ttl_s}")
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, dict[str, Any]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(version: str, x: np.ndarray) -> tuple[str, bytes]:
        return version, np.ascontiguousarray(x, dtype=np.float64).tobytes()

    def get(self, version: str, x: np.ndarray) -> dict[str, Any] | None:
        if not self.size:
            return None
        key = self._key(version, x)
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, version: str, x: np.ndarray, value: dict[str, Any]) -> None:
        if not self.size:
            return
        key = self._key(version, x)
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class SharedCache:
    """The second cache level, shared by every worker and replica: Redis ``GET``/``SET PX`` on keys
    ``ffc:<model>:<version>:<sha1 of the vector>``. A failing Redis never fails a request: the cache is
    skipped (and counted by the caller).

        >>> # shared = SharedCache("redis://127.0.0.1:6379/0", ttl_s=60)
        >>> # await shared.get("fraud", "3", x)
    """

    def __init__(self, url: str, *, ttl_s: float = 60.0) -> None:
        from urllib.parse import urlsplit

        from fourfold.features.stores.resp import Multiplexed

        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"the shared prediction cache needs a redis:// URL, got {parts.scheme}://")
        db = int(parts.path.strip("/") or 0)
        self.ttl_ms = str(int(ttl_s * 1000))
        self._redis = Multiplexed(parts.hostname or "127.0.0.1", parts.port or 6379, db=db,
                                  username=parts.username, password=parts.password)  # fmt: skip

    @staticmethod
    def _key(model: str, version: str, x: np.ndarray) -> str:
        import hashlib

        digest = hashlib.sha1(np.ascontiguousarray(x, dtype=np.float64).tobytes()).hexdigest()
        return f"ffc:{model}:{version}:{digest}"

    async def get(self, model: str, version: str, x: np.ndarray) -> dict[str, Any] | None:
        import orjson

        raw = await self._redis.call("GET", self._key(model, version, x))
        return None if raw is None else dict(orjson.loads(raw))

    async def put(self, model: str, version: str, x: np.ndarray, value: dict[str, Any]) -> None:
        import orjson

        await self._redis.call("SET", self._key(model, version, x), orjson.dumps(value), "PX", self.ttl_ms)

    async def close(self) -> None:
        await self._redis.close()
