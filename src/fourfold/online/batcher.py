"""Adaptive micro-batching: rows submitted by concurrent requests in the same moment become one model call.

A lone request never waits: the batch is flushed on the next turn of the event loop. Only when other
requests are already in flight (they will submit rows soon) does a batch wait, at most
``max_batch_wait_ms``, for them. One bad row never fails the others: if the batched call raises, the rows
are scored one by one and only the failing row gets the error.

    >>> # batcher = MicroBatcher(predictor.predict_matrix, max_batch_size=64, max_batch_wait_ms=2)
    >>> # row = await batcher.submit(x)    # x: [1, features] -> {"score": ..., "label": ...}
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["MicroBatcher"]

Scorer = Callable[[np.ndarray], dict[str, np.ndarray]]


class MicroBatcher:
    def __init__(
        self,
        score: Scorer,
        *,
        max_batch_size: int = 64,
        max_batch_wait_ms: float = 2.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_batch_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_batch_wait_ms >= 0")
        self.score = score
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_batch_wait_ms / 1000
        self.on_batch = on_batch
        self.expected = 0  # requests in flight that may still submit a row (set by the server)
        self._pending: list[tuple[np.ndarray, asyncio.Future[dict[str, Any]]]] = []
        self._scheduled = False
        self._waited = False

    async def submit(self, x: np.ndarray) -> dict[str, Any]:
        """Score one ``[rows, features]`` matrix (usually one row) as part of the next batch."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending.append((x, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        return await fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending
        more_coming = self.expected > len(pending)
        if more_coming and not self._waited and len(pending) < self.max_batch_size and self.max_wait_s > 0:
            self._waited = True  # wait once for the requests already in flight
            loop.call_later(self.max_wait_s, self._flush, loop)
            return
        self._waited = False
        batch, self._pending = pending[: self.max_batch_size], pending[self.max_batch_size :]
        if self._pending:
            loop.call_soon(self._flush, loop)
        else:
            self._scheduled = False
        batch = [(x, f) for x, f in batch if not f.done()]  # a cancelled request (deadline) is skipped
        if not batch:
            return
        if self.on_batch is not None:
            self.on_batch(sum(len(x) for x, _ in batch))
        try:
            out = self.score(np.concatenate([x for x, _ in batch]) if len(batch) > 1 else batch[0][0])
        except Exception:
            if len(batch) == 1:
                self._settle_error(batch[0][1])
                return
            for x, fut in batch:  # isolate the failing row: the others still get their scores
                try:
                    self._settle(fut, self.score(x), 0, len(x))
                except Exception:
                    self._settle_error(fut)
            return
        start = 0
        for x, fut in batch:
            self._settle(fut, out, start, start + len(x))
            start += len(x)

    @staticmethod
    def _settle(fut: asyncio.Future[dict[str, Any]], out: dict[str, np.ndarray], a: int, b: int) -> None:
        if not fut.done():
            fut.set_result({k: v[a:b] for k, v in out.items()})

    @staticmethod
    def _settle_error(fut: asyncio.Future[dict[str, Any]]) -> None:
        import sys

        if not fut.done():
            fut.set_exception(sys.exc_info()[1] or RuntimeError("scoring failed"))
