"""Run a batch job on a cron schedule, in-process - for users without a scheduler.

    >>> # stop = stop_on_signals()
    >>> # run_every("0 2 * * *", lambda when: run_batch(model=..., input=..., output=...,
    >>> #           partition=render_partition("date={yesterday}", when)), stop=stop)

* **Fire times** come from the cron expression (``croniter``: 5 fields, 6 with seconds last, ``@daily``...)
  evaluated in ``tz`` (UTC by default - no DST surprises). The job gets the *scheduled* time, not the
  time it happened to start, so a late run still scores the partition it was meant for. In a zone with
  summer time croniter's rules apply: a time in the skipped hour fires at its end, one in the repeated
  hour fires twice (the second run re-scores the same ``{date}`` partition - harmless, but UTC has neither).
* **Failures**: a run that raises is reported (``on_error``, by default a log line) and the schedule goes
  on; the next run is a fresh attempt, and batch runs are idempotent (a re-run replaces its partition).
* **No pile-ups**: a run still going at the next fire time is not started twice; the fire times it
  overlapped are skipped and logged, not queued. After a sleep that ended late (a suspended machine, a
  wall clock stepped forward) the latest missed fire time runs once and the earlier ones are logged.
* **Clock changes**: the sleep is cut in slices of at most a minute; each slice re-reads the clock, so a
  stop request is noticed and a clock stepped back re-plans the next fire time.
* **Stopping**: ``stop_on_signals()`` turns SIGTERM / SIGINT into a stop event: the current run finishes,
  no new one starts; a second signal aborts the run (a killed run can be ``--resume``-d).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import string
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from types import FrameType
from typing import Any

from fourfold.errors import FourfoldError, MissingExtraError, RequestError

__all__ = ["render_partition", "run_every", "stop_on_signals"]

log = logging.getLogger(__name__)

_SLICE_S = 60.0  # the longest single sleep: how late a stop request or a clock change may be noticed
_PLACEHOLDERS = ("date", "yesterday", "hour", "ts", "when")


# -- partition templates -----------------------------------------------------------------------------------
class _Formatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        if isinstance(value, date) and not format_spec:  # datetime too: ISO, not str()'s space
            return value.isoformat()
        return super().format_field(value, format_spec)


def render_partition(template: str | None, when: datetime) -> str | None:
    """The partition spec ``template`` for a run scheduled at ``when``.

    ``{date}`` (``2025-04-15``), ``{yesterday}`` (``2025-04-14``), ``{hour}`` (``02``), ``{ts}`` (ISO 8601
    time) and ``{when:%Y/%m/%d}`` (any strftime format; ``{date:...}`` and ``{yesterday:...}`` take one
    too). A spec without placeholders passes through unchanged; ``{{`` and ``}}`` are literal braces.
    """
    if template is None:
        return None
    if "{" not in template and "}" not in template:
        return template
    formatter = _Formatter()
    try:
        fields = list(formatter.parse(template))
    except ValueError as exc:
        raise RequestError(f"bad partition template {template!r}: {exc}") from exc
    for _, name, _, _ in fields:
        if name is not None and name not in _PLACEHOLDERS:
            known = ", ".join(f"{{{p}}}" for p in _PLACEHOLDERS[:-1]) + ", {when:FORMAT}"
            raise RequestError(
                f"unknown placeholder {{{name}}} in partition template {template!r}; known: {known}",
            )
    values = {
        "date": when.date(),
        "yesterday": (when - timedelta(days=1)).date(),
        "hour": f"{when.hour:02d}",
        "ts": when.isoformat(),
        "when": when,
    }
    try:
        return formatter.vformat(template, (), values)
    except (ValueError, TypeError) as exc:
        raise RequestError(f"bad partition template {template!r}: {exc}") from exc


# -- the schedule ------------------------------------------------------------------------------------------
class _Cron:
    """Fire times of one cron expression, in one time zone."""

    def __init__(self, expr: str, tz: tzinfo) -> None:
        try:
            from croniter import croniter
        except ImportError as exc:  # pragma: no cover - the [schedule] extra is part of [batch]
            raise MissingExtraError("croniter", "schedule", "a cron schedule (--every)") from exc
        self.croniter, self.expr, self.tz = croniter, expr, tz
        if not isinstance(expr, str) or not expr.strip():
            raise RequestError(f"bad cron expression {expr!r}: it is empty")
        try:
            self.after(datetime.now(tz))  # parses, and finds that it fires at all ("0 0 30 2 *" never does)
        except (ValueError, KeyError, TypeError) as exc:  # croniter's errors are ValueErrors
            raise RequestError(f"bad cron expression {expr!r}: {exc}") from exc

    # Instants are compared and subtracted in UTC: two datetimes of one ZoneInfo compare by wall time,
    # which goes wrong in the hour a zone's clocks go back. croniter works in ``tz``.
    def after(self, t: datetime) -> datetime:
        """The first fire time strictly after the instant ``t``, in UTC."""
        fire: datetime = t
        for _ in range(3):  # a guard: never the same fire time twice, whatever croniter says
            fire = self.croniter(self.expr, fire.astimezone(self.tz)).get_next(datetime).astimezone(UTC)
            if fire > t:
                return fire
            fire = t + timedelta(seconds=1)
        raise FourfoldError(f"cron expression {self.expr!r}: no fire time after {t.isoformat()}")

    def at_or_before(self, t: datetime) -> datetime:
        """The last fire time at or before the instant ``t``, in UTC."""
        nxt = self.after(t).astimezone(self.tz)
        fire: datetime = self.croniter(self.expr, nxt).get_prev(datetime).astimezone(UTC)
        return fire

    def local(self, t: datetime) -> str:
        return t.astimezone(self.tz).isoformat()

    def count(self, start: datetime, end: datetime, limit: int = 10_000) -> int:
        """How many fire times lie in ``[start, end)`` (counted up to ``limit``)."""
        n, it = 0, self.croniter(self.expr, (start - timedelta(microseconds=1)).astimezone(self.tz))
        while n < limit and it.get_next(datetime).astimezone(UTC) < end:
            n += 1
        return n


def run_every(
    cron: str,
    job_for: Callable[[datetime], Any],
    *,
    tz: tzinfo = UTC,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
    max_runs: int | None = None,
    on_error: Callable[[datetime, BaseException], None] | None = None,
) -> int:
    """Call ``job_for(fire_time)`` at every fire time of ``cron`` until ``stop`` is set or ``max_runs``
    runs (failed ones included) are done; returns the number of runs.

    ``cron`` is checked first (a bad one is a 400 ``FourfoldError`` with croniter's reason). Fire times
    are aware datetimes in ``tz``. A run that raises an ``Exception`` goes to ``on_error(fire_time, exc)``
    (default: logged) and the schedule continues; ``KeyboardInterrupt`` / ``SystemExit`` and an error
    raised by ``on_error`` itself end it. ``clock`` (default: the wall clock; a naive reading is taken to
    be in ``tz``) and ``sleep`` (default: waiting on ``stop``) are there for tests.
    """
    schedule = _Cron(cron, tz)
    stop = stop if stop is not None else threading.Event()
    wait: Callable[[float], Any] = sleep if sleep is not None else stop.wait
    report = on_error if on_error is not None else _log_error

    def now() -> datetime:  # in UTC (see _Cron)
        t = clock() if clock is not None else datetime.now(UTC)
        return (t.replace(tzinfo=tz) if t.tzinfo is None else t).astimezone(UTC)

    runs = 0
    last: datetime | None = None  # the fire time of the last run
    since = now()  # the clock reading ``planned`` was computed from
    planned = schedule.after(since)
    while (max_runs is None or runs < max_runs) and not stop.is_set():
        log.info("next run of %r at %s", cron, schedule.local(planned))
        fire = _sleep_until(schedule, planned, since, last, now, wait, stop)
        if fire is None:
            break
        runs += 1
        last = fire
        when = fire.astimezone(tz)
        log.info("run %d for %s", runs, when.isoformat())
        try:
            job_for(when)
        except Exception as exc:
            report(when, exc)
        end = since = now()
        planned = schedule.after(max(end, fire))
        overlapped = schedule.count(fire + timedelta(microseconds=1), planned)
        if overlapped:
            log.warning(
                "the run for %s took until %s: skipped %d fire time(s) of %r it overlapped (not queued)",
                when.isoformat(), schedule.local(end), overlapped, cron,
            )  # fmt: skip
    return runs


def _sleep_until(
    schedule: _Cron,
    planned: datetime,
    since: datetime,
    last: datetime | None,
    now: Callable[[], datetime],
    wait: Callable[[float], Any],
    stop: threading.Event,
) -> datetime | None:
    """Sleep (in slices) until ``planned`` (computed at clock reading ``since``); the fire time to run
    then, or ``None`` when stopped."""
    while not stop.is_set():
        t = now()
        if t >= planned:
            fire = schedule.at_or_before(t)  # woke late (suspend, clock stepped forward): the latest one
            missed = schedule.count(planned, fire)
            if missed:
                log.warning(
                    "woke at %s, after %d missed fire time(s) of %r since %s: running once, for %s",
                    schedule.local(t), missed, schedule.expr, schedule.local(planned), schedule.local(fire),
                )  # fmt: skip
            return fire
        if t < since:  # the clock was stepped back: re-plan (never re-running a fire already run)
            since = t
            earliest = schedule.after(t if last is None else max(t, last))
            if earliest < planned:
                log.warning(
                    "the clock went back to %s: next run at %s", schedule.local(t), schedule.local(earliest)
                )
                planned = earliest
        wait(min(_SLICE_S, max((planned - t).total_seconds(), 0.0)))
    return None


def _log_error(when: datetime, exc: BaseException) -> None:
    if isinstance(exc, FourfoldError):
        log.error("the run for %s failed: %s; the schedule goes on", when.isoformat(), exc.message)
    else:
        log.error("the run for %s failed; the schedule goes on", when.isoformat(), exc_info=exc)


# -- signals -----------------------------------------------------------------------------------------------
def stop_on_signals() -> threading.Event:
    """An event set on the first SIGTERM or SIGINT (the current run finishes, no new one starts); a second
    signal aborts at once (``KeyboardInterrupt`` for SIGINT, ``SystemExit(143)`` for SIGTERM).

    Call it from the main thread. The event is set by a helper thread woken through
    ``signal.set_wakeup_fd``, never from the Python-level handler: ``Event.set`` takes a lock the
    interrupted main thread may be holding (for instance inside ``stop.wait``).
    """
    if threading.current_thread() is not threading.main_thread():
        raise FourfoldError("stop_on_signals() must be called from the main thread")
    stop = threading.Event()
    ours = {int(signal.SIGTERM), int(signal.SIGINT)}
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watch() -> None:
        while data := os.read(read_fd, 512):
            if previous != -1:  # someone (an event loop) had the wakeup fd: pass the bytes on
                with contextlib.suppress(OSError):
                    os.write(previous, data)
            for signum in data:
                if signum in ours and not stop.is_set():
                    log.warning(
                        "%s: stopping after the current run (send it again to abort now)",
                        signal.Signals(signum).name,
                    )
                    stop.set()

    threading.Thread(target=watch, name="fourfold-signals", daemon=True).start()
    return stop
