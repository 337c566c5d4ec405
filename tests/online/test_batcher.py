from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fourfold.errors import InputError
from fourfold.online.batcher import MicroBatcher
from fourfold.online.cache import PredictionCache


def _scorer(calls: list[int]) -> object:
    def score(x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(x))
        if (x < 0).any():
            raise InputError("negative input")
        return {"score": x[:, 0] * 2}

    return score


def test_concurrent_rows_share_one_call_and_each_gets_its_own_score() -> None:
    calls: list[int] = []
    batcher = MicroBatcher(_scorer(calls), max_batch_size=8)  # type: ignore[arg-type]

    async def main() -> list[float]:
        outs = await asyncio.gather(*(batcher.submit(np.array([[float(i)]])) for i in range(20)))
        return [float(o["score"][0]) for o in outs]

    assert asyncio.run(main()) == [2.0 * i for i in range(20)]
    assert calls == [8, 8, 4]


def test_a_lone_request_does_not_wait_even_with_a_wait_configured() -> None:
    calls: list[int] = []
    batcher = MicroBatcher(_scorer(calls), max_batch_size=8, max_batch_wait_ms=500)  # type: ignore[arg-type]
    batcher.expected = 1

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await batcher.submit(np.array([[1.0]]))
        return loop.time() - t0

    assert asyncio.run(main()) < 0.1


def test_one_bad_row_does_not_fail_the_others() -> None:
    calls: list[int] = []
    batcher = MicroBatcher(_scorer(calls), max_batch_size=8)  # type: ignore[arg-type]

    async def main() -> list[object]:
        rows = [np.array([[1.0]]), np.array([[-1.0]]), np.array([[3.0]])]
        return await asyncio.gather(*(batcher.submit(r) for r in rows), return_exceptions=True)

    good, bad, other = asyncio.run(main())
    assert isinstance(bad, InputError)
    assert float(good["score"][0]) == 2.0  # type: ignore[index]
    assert float(other["score"][0]) == 6.0  # type: ignore[index]


class FakeClock:
    """Monotonic seconds that move only when the test calls :meth:`advance` (in ms)."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, ms: float) -> None:
        self.now_s += ms / 1000


def test_cache_lru_ttl_and_version() -> None:
    clock = FakeClock()
    cache = PredictionCache(size=2, ttl_s=0.05, clock=clock)
    x, y, z = np.array([1.0]), np.array([2.0]), np.array([3.0])
    cache.put("1", x, {"s": 1})
    cache.put("1", y, {"s": 2})
    assert cache.get("1", x) == {"s": 1}
    cache.put("1", z, {"s": 3})  # evicts y, the least recently used
    assert cache.get("1", y) is None
    assert cache.get("2", x) is None  # another version never sees it
    clock.advance(60)
    assert cache.get("1", x) is None
    assert (cache.hits, cache.misses) == (1, 3)
    with pytest.raises(ValueError, match="cache size"):
        PredictionCache(size=-1)
