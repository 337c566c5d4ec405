"""Admission: which requests a worker takes on now, which wait a moment for a slot, which it refuses.

A worker answers well up to some number of requests in flight; past it every request waits on every
other (the event loop is one queue) and they all miss the deadline together. :class:`Admission` keeps
the requests in flight under a limit and refuses the excess before anything is spent on it - no body
read, no parse, no store read, no log line - with a 503 and ``Retry-After`` (:data:`REJECTION`).

* **The limit** (:class:`AdaptiveLimit`) follows the latency it causes. Every window (100 ms) the 90th
  percentile of the admitted requests' service time, as a share of their target (half the deadline
  by default), moves it: down in proportion when over the target (latency grows with the requests in
  flight: twice the target halves the limit), up by its square root when under the target while the
  limit was reached - always between a floor and a ceiling. A large decrease that did not make the
  requests admitted after it faster is undone: that latency was not the limit's (a slow store, a loop
  busy refusing a flood), and a smaller limit would only refuse more. It aims at the latency budget
  rather than at the unloaded latency (as gradient limits do): clients that retry at once make every
  refusal cost again, so a server that admits too few spends its time refusing.
* **The queue**: a request over the limit waits up to ``queue_timeout_s`` for a slot, oldest first; one
  that waited longer is refused (``queue_timeout``). Once the queue has stood that long without
  emptying (the arrivals outrun the service - CoDel's standing queue), it is served newest first
  (LIFO: a fresh request still meets its deadline, an old one would not) and arrivals are refused at
  once (``overloaded``), as they are when the queue is full (``queue_full``).
* Clocks are injectable: tests move time by hand and call :meth:`Admission.expire`.

    >>> gate = Admission(AdaptiveLimit(2, min_limit=1, max_limit=8), max_queue=4, queue_timeout_s=0.01)
    >>> gate.try_enter(), gate.try_enter(), gate.try_enter()
    (True, True, False)
    >>> gate.refusal() is None  # the third may wait in the queue: `await gate.wait()`
    True
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

import orjson

__all__ = ["REASONS", "REJECTION", "AdaptiveLimit", "Admission", "Rejected"]

Clock = Callable[[], float]

#: the labels of ``fourfold_rejected_total``: why a request was refused
REASONS = ("queue_full", "overloaded", "queue_timeout", "deadline")
#: the body of every refusal (one constant: a refusal costs no encoding)
REJECTION = orjson.dumps({"error": "server overloaded, retry later"})
RETRY_AFTER = "1"


class Rejected(Exception):
    """A request the admission refused (``reason`` is one of :data:`REASONS`); the guard answers it with
    :data:`REJECTION`. Never leaves the server."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AdaptiveLimit:
    """The concurrency limit of one worker, moved by measured latency (see the module docstring).
    ``min_limit == max_limit`` is a fixed limit.

    A large decrease is checked: if the requests admitted after it are not faster, the latency was not
    the limit's doing (a slow store, an event loop busy refusing a flood) and a smaller limit would only
    refuse more - it is undone, and decreases wait ``hold_s`` (doubling while they keep failing).

    >>> t = [0.0]
    >>> limit = AdaptiveLimit(100, min_limit=10, max_limit=200, clock=lambda: t[0])
    >>> for _ in range(20):
    ...     limit.observe(0.2, target_s=0.05)  # four times the target
    >>> t[0] = 0.1; limit.observe(0.2, target_s=0.05)
    >>> limit.value
    50.0
    """

    def __init__(
        self,
        initial: float,
        *,
        min_limit: int,
        max_limit: int,
        window_s: float = 0.1,
        min_samples: int = 10,
        hold_s: float = 2.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit <= max_limit, got {min_limit} and {max_limit}")
        if window_s <= 0 or min_samples < 1 or hold_s < 0:
            raise ValueError("window_s must be > 0, min_samples >= 1 and hold_s >= 0")
        self.min_limit, self.max_limit = min_limit, max_limit
        self.value = float(min(max(initial, min_limit), max_limit))
        self.window_s, self.min_samples = window_s, min_samples
        self._clock = clock
        self._ratios: list[float] = []  # latency / target of the window's requests
        self._limited = False  # the limit turned a request away (or was reached) in this window
        self._window_start = clock()
        self._base_hold = self._hold = hold_s
        self._hold_until = -math.inf
        self._undo: float | None = None  # the value before a decrease being checked
        self._cut_at = 0.0  # when it was made: only requests admitted since tell whether it helped
        self._cut_ratio = 0.0  # the ratio that made it

    @property
    def fixed(self) -> bool:
        return self.min_limit == self.max_limit

    def saturated(self) -> None:
        """The limit was reached: a request had to wait or was refused."""
        self._limited = True

    def observe(self, latency_s: float, target_s: float) -> None:
        """One admitted request's service time and the latency it should have stayed under."""
        if self.min_limit == self.max_limit:
            return
        now = self._clock()
        if self._undo is not None and now - latency_s < self._cut_at:
            return  # admitted before the decrease being checked: says nothing about it
        self._ratios.append(latency_s / target_s)
        if now - self._window_start >= self.window_s and len(self._ratios) >= self.min_samples:
            self._window_start = now
            self._update(now)

    def _update(self, now: float) -> None:
        ratios, self._ratios = self._ratios, []
        ratios.sort()
        p90 = ratios[int(0.9 * (len(ratios) - 1))]
        limited, self._limited = self._limited, False
        if self._undo is not None:  # did the decrease help? at least half the improvement it aimed at
            undo, self._undo = self._undo, None
            aimed = self._cut_ratio * self.value / undo
            if p90 > (self._cut_ratio + aimed) / 2:
                self.value = undo
                self._hold_until = now + self._hold
                self._hold = min(self._hold * 2, 5 * self._base_hold)
            else:
                self._hold = self._base_hold
            return
        value = self.value
        if p90 > 1.0:
            if now < self._hold_until:
                return
            factor = max(0.5, 1.0 / p90)  # latency grows with the requests in flight (Little's law)
            if factor < 0.8 and value > self.min_limit:
                self._undo, self._cut_at, self._cut_ratio = value, now, p90
            value *= factor
        elif limited:
            value += math.sqrt(value)
            self._hold = self._base_hold
        self.value = min(max(value, float(self.min_limit)), float(self.max_limit))
        if self._undo is not None and self.value >= self._undo:
            self._undo = None


class _Waiter:
    __slots__ = ("future", "since")

    def __init__(self, since: float, future: asyncio.Future[float]) -> None:
        self.since = since
        self.future = future


class Admission:
    """The gate of one worker: ``try_enter`` (a slot now?), ``refusal`` (would a request be refused
    now, and why), ``await wait()`` (a place in the queue until a slot frees or the budget is spent),
    ``leave`` / ``release`` (give the slot back, with or without a latency sample).

    For the metrics: :attr:`rejected` (cumulative counts by reason), :attr:`entered` (requests that
    took a slot at once) and :attr:`waits` (how long the others waited, admitted or refused) - the
    last two drained by the metrics flush."""

    def __init__(
        self,
        limit: AdaptiveLimit,
        *,
        max_queue: int,
        queue_timeout_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_queue < 0 or queue_timeout_s < 0:
            raise ValueError("max_queue and queue_timeout_s must be >= 0")
        self.limit = limit
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.clock = clock
        self.inflight = 0
        self.rejected: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.entered = 0
        self.waits: list[float] = []
        self._queue: deque[_Waiter] = deque()
        self._standing_since = 0.0  # when the queue last went from empty to not empty
        self._timer: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def try_enter(self) -> bool:
        """Take a slot if one is free and nobody is waiting for it."""
        if self.inflight < self.limit.value and not self._queue:
            self.inflight += 1
            self.entered += 1
            if self.inflight >= self.limit.value:
                self.limit.saturated()
            return True
        self.limit.saturated()
        return False

    def refusal(self) -> str | None:
        """Why a request arriving now would be refused at once, or None (a slot, or a place in the
        queue). Cheap enough to ask before anything else is done for a request."""
        queue = self._queue
        if not queue and self.inflight < self.limit.value:
            return None
        if len(queue) >= self.max_queue:
            return "queue_full"
        if queue and self.clock() - self._standing_since > self.queue_timeout_s:
            return "overloaded"
        return None

    def reject(self, reason: str) -> None:
        """Count a refusal (the caller answers it)."""
        self.rejected[reason] += 1

    async def wait(self) -> float:
        """Wait in the queue for a slot; returns the time waited. Raises :class:`Rejected` when refused
        now, or when the wait passes ``queue_timeout_s``."""
        if self.try_enter():
            return 0.0
        reason = self.refusal()
        if reason is not None:
            self.reject(reason)
            raise Rejected(reason)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        now = self.clock()
        if not self._queue:
            self._standing_since = now
        self._queue.append(_Waiter(now, future))
        self._arm()
        try:
            return await future
        except asyncio.CancelledError:  # the deadline or a disconnect: give back a slot handed over
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release()
            raise

    def leave(self, started: float, target_s: float) -> None:
        """Give the slot back; ``started`` (this gate's clock) is when the request took it, ``target_s``
        the latency it should have stayed under."""
        self.inflight -= 1
        self.limit.observe(self.clock() - started, target_s)
        if self._queue:
            self._dispatch()

    def release(self) -> None:
        """Give the slot back without a latency sample (the request never ran)."""
        self.inflight -= 1
        if self._queue:
            self._dispatch()

    def expire(self) -> None:
        """Refuse the waiters that waited past the budget, and hand free slots to the rest (a timer
        calls it; tests, by hand)."""
        self._dispatch()

    def _dispatch(self) -> None:
        now = self.clock()
        queue, budget = self._queue, self.queue_timeout_s
        while queue and (queue[0].future.done() or now - queue[0].since > budget):
            waiter = queue.popleft()
            if not waiter.future.done():
                self.reject("queue_timeout")
                self.waits.append(now - waiter.since)
                waiter.future.set_exception(Rejected("queue_timeout"))
        lifo = bool(queue) and now - self._standing_since > budget
        while queue and self.inflight < self.limit.value:
            waiter = queue.pop() if lifo else queue.popleft()
            if waiter.future.done():  # cancelled while it waited
                continue
            self.inflight += 1
            waited = now - waiter.since
            self.waits.append(waited)
            waiter.future.set_result(waited)

    def _arm(self) -> None:
        if self._timer is not None or not self._queue:
            return
        delay = self._queue[0].since + self.queue_timeout_s - self.clock()
        self._timer = asyncio.get_running_loop().call_later(max(delay, 0.0) + 1e-4, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()
        self._arm()
