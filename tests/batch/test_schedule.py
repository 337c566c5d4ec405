"""The in-process cron schedule: fire times, failures, overlaps, stopping - on a fake clock, so no test
waits for real time (except the signal tests, which need a real process and a real clock)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FEATURES, build
from fourfold import FourfoldError, LocalRegistry, save_model
from fourfold.batch import run_batch
from fourfold.batch.schedule import render_partition, run_every, stop_on_signals
from fourfold.errors import NotFoundError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class FakeClock:
    """A wall clock that only moves when slept on (or jumped by a test)."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert 0 <= seconds <= 60, seconds  # slices: a stop request or a clock change is seen within a minute
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


def fires(cron: str, start: datetime, runs: int, **kw: object) -> tuple[list[datetime], FakeClock]:
    clock = FakeClock(start)
    seen: list[datetime] = []
    n = run_every(cron, seen.append, clock=clock, sleep=clock.sleep, max_runs=runs, **kw)  # type: ignore[arg-type]
    assert n == len(seen) == runs
    return seen, clock


# -- fire times --------------------------------------------------------------------------------------------
def test_daily_fire_times_cross_day_month_and_year_boundaries() -> None:
    seen, clock = fires("0 2 * * *", at("2025-04-15T01:00:00"), 3)
    assert seen == [at("2025-04-15T02:00:00"), at("2025-04-16T02:00:00"), at("2025-04-17T02:00:00")]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in seen)
    assert clock.now == at("2025-04-17T02:00:00")  # the job ran at its fire time, not later
    # just after a fire time: that one is gone, the next is tomorrow's
    assert fires("0 2 * * *", at("2025-04-15T02:00:00.5"), 1)[0] == [at("2025-04-16T02:00:00")]
    assert fires("0 2 * * *", at("2025-04-15T02:00:00"), 1)[0] == [at("2025-04-16T02:00:00")]
    assert fires("0 2 * * *", at("2025-12-31T23:30:00"), 2)[0] == [
        at("2026-01-01T02:00:00"),
        at("2026-01-02T02:00:00"),
    ]


def test_every_15_minutes() -> None:
    seen, clock = fires("*/15 * * * *", at("2025-04-15T10:07:30"), 4)
    assert seen == [at(f"2025-04-15T{t}") for t in ("10:15:00", "10:30:00", "10:45:00", "11:00:00")]
    assert sum(clock.sleeps) == pytest.approx(53 * 60 - 30)


def test_fire_times_are_in_the_given_time_zone() -> None:
    plus2 = timezone(timedelta(hours=2))
    seen, _ = fires("0 2 * * *", at("2025-04-15T01:00:00"), 1, tz=plus2)  # 01:00 UTC is 03:00 at +02
    assert seen == [datetime(2025, 4, 16, 2, 0, tzinfo=plus2)]
    assert seen[0].utcoffset() == timedelta(hours=2)
    naive = FakeClock(datetime(2025, 4, 15, 1, 0))  # a naive clock reads in tz
    got: list[datetime] = []
    run_every("0 2 * * *", got.append, tz=plus2, clock=naive, sleep=naive.sleep, max_runs=1)
    assert got == [datetime(2025, 4, 15, 2, 0, tzinfo=plus2)]


def test_fire_times_in_a_zone_with_summer_time_are_distinct_instants() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # the tzdata package (a dev dependency) when the OS has none
    # clocks go back at 03:00 CEST on 2025-10-26: 02:00 and 02:30 happen twice
    seen, _ = fires("*/30 * * * *", at("2025-10-25T23:10:00"), 6, tz=berlin)
    assert [t.isoformat() for t in seen] == [
        "2025-10-26T01:30:00+02:00",
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:30:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T02:30:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ]
    assert [t.astimezone(UTC).strftime("%H:%M") for t in seen] == [
        "23:30", "00:00", "00:30", "01:00", "01:30", "02:00",
    ]  # fmt: skip
    # clocks skip 02:00-03:00 on 2025-03-30: the 02:30 run happens at 03:00
    spring, _ = fires("30 2 * * *", at("2025-03-29T12:00:00"), 2, tz=berlin)
    assert [t.isoformat() for t in spring] == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]


# -- failures, overlaps, clock jumps -----------------------------------------------------------------------
def test_a_failing_run_does_not_stop_the_schedule(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(at("2025-04-15T00:00:00"))
    errors: list[tuple[datetime, BaseException]] = []
    ok: list[datetime] = []

    def job(when: datetime) -> None:
        if when.hour % 2:
            raise RuntimeError(f"boom at {when.hour}")
        ok.append(when)

    kw = {"clock": clock, "sleep": clock.sleep, "max_runs": 4}
    n = run_every("0 * * * *", job, on_error=lambda w, e: errors.append((w, e)), **kw)  # type: ignore[arg-type]
    assert n == 4
    assert ok == [at("2025-04-15T02:00:00"), at("2025-04-15T04:00:00")]
    assert [(w.hour, str(e)) for w, e in errors] == [(1, "boom at 1"), (3, "boom at 3")]
    # the default reports it in the log and goes on too
    with caplog.at_level(logging.ERROR, logger="fourfold.batch.schedule"):
        assert run_every("0 * * * *", job, **kw) == 4  # type: ignore[arg-type]
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 2
    assert "2025-04-15T05:00:00+00:00" in failed[0].getMessage()  # the clock went on from the first loop
    assert failed[0].exc_info is not None
    # a FourfoldError is reported by its message, without a traceback
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="fourfold.batch.schedule"):

        def bad(when: datetime) -> None:
            raise NotFoundError("no such model")

        run_every("0 * * * *", bad, clock=clock, sleep=clock.sleep, max_runs=1)
    assert [r.getMessage() for r in caplog.records] == [
        "the run for 2025-04-15T09:00:00+00:00 failed: no such model; the schedule goes on"
    ]


def test_keyboard_interrupt_in_a_run_ends_the_schedule() -> None:
    clock = FakeClock(at("2025-04-15T00:00:00"))

    def job(when: datetime) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_every("0 * * * *", job, clock=clock, sleep=clock.sleep, max_runs=3)


def test_a_run_overlapping_the_next_fire_time_is_not_started_twice(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(at("2025-04-15T10:07:00"))
    started: list[tuple[datetime, datetime]] = []

    def slow(when: datetime) -> None:  # 40 minutes: overlaps the next two fire times
        started.append((when, clock.now))
        clock.now += timedelta(minutes=40)

    with caplog.at_level(logging.WARNING, logger="fourfold.batch.schedule"):
        n = run_every("*/15 * * * *", slow, clock=clock, sleep=clock.sleep, max_runs=3)
    assert n == 3
    assert started == [
        (at("2025-04-15T10:15:00"), at("2025-04-15T10:15:00")),
        (at("2025-04-15T11:00:00"), at("2025-04-15T11:00:00")),  # 10:30 and 10:45 skipped, not queued
        (at("2025-04-15T11:45:00"), at("2025-04-15T11:45:00")),
    ]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3
    assert "skipped 2 fire time(s)" in skipped[0]


def test_a_late_wake_runs_the_latest_missed_fire_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(at("2025-04-15T01:00:00"))
    jumped = False

    def sleep(seconds: float) -> None:  # the machine is suspended for three days in the first sleep
        nonlocal jumped
        clock.sleep(seconds)
        if not jumped:
            jumped = True
            clock.now += timedelta(days=3, hours=1)  # wakes at 2025-04-18T02:01

    seen: list[datetime] = []
    with caplog.at_level(logging.WARNING, logger="fourfold.batch.schedule"):
        run_every("0 2 * * *", seen.append, clock=clock, sleep=sleep, max_runs=2)
    assert seen == [at("2025-04-18T02:00:00"), at("2025-04-19T02:00:00")]
    assert any("3 missed fire time(s)" in r.getMessage() for r in caplog.records)


def test_a_clock_stepped_back_replans_without_rerunning() -> None:
    clock = FakeClock(at("2025-04-15T10:14:00"))
    seen: list[datetime] = []
    steps = iter([timedelta(minutes=-50), timedelta(0)])

    def job(when: datetime) -> None:
        seen.append(when)
        clock.now += next(steps)  # after the 10:15 run, the clock is stepped back to 09:25

    run_every("*/15 * * * *", job, clock=clock, sleep=clock.sleep, max_runs=2)
    assert seen == [at("2025-04-15T10:15:00"), at("2025-04-15T10:30:00")]  # 09:30 ... 10:15 not re-run

    clock = FakeClock(at("2025-04-16T12:00:00"))  # wrong by a day at start, corrected while waiting
    seen = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now == at("2025-04-16T12:01:00"):
            clock.now = at("2025-04-15T12:00:00")

    run_every("0 2 * * *", seen.append, clock=clock, sleep=sleep, max_runs=1)
    assert seen == [at("2025-04-16T02:00:00")]  # not 2025-04-17


# -- stopping ----------------------------------------------------------------------------------------------
def test_a_stop_event_ends_the_schedule() -> None:
    clock = FakeClock(at("2025-04-15T00:00:00"))
    stop = threading.Event()
    seen: list[datetime] = []

    def job(when: datetime) -> None:
        seen.append(when)
        if len(seen) == 2:
            stop.set()  # the current run finishes; no new one starts

    assert run_every("0 * * * *", job, clock=clock, sleep=clock.sleep, stop=stop) == 2
    assert seen == [at("2025-04-15T01:00:00"), at("2025-04-15T02:00:00")]

    def sleep(seconds: float) -> None:  # set while sleeping: seen within one slice
        clock.sleep(seconds)
        if len(clock.sleeps) == 5:
            stop.set()

    stop.clear()
    clock.sleeps.clear()
    assert run_every("0 2 * * *", seen.append, clock=clock, sleep=sleep, stop=stop) == 0
    assert len(clock.sleeps) == 5
    assert run_every("0 2 * * *", seen.append, clock=clock, sleep=sleep, stop=stop) == 0  # already set
    assert len(clock.sleeps) == 5
    assert len(seen) == 2


def test_stop_on_signals_wants_the_main_thread() -> None:
    errors: list[BaseException] = []

    def call() -> None:
        try:
            stop_on_signals()
        except FourfoldError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    t.join()
    assert [str(e) for e in errors] == ["stop_on_signals() must be called from the main thread"]


def test_the_default_sleep_wakes_on_stop() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    assert run_every("0 0 1 1 *", lambda when: None, stop=stop) == 0  # next fire is months away
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("0 2 * *", "Exactly 5, 6 or 7 columns"),
        ("61 * * * *", "out of range"),
        ("*/0 * * * *", "step '0'"),
        ("0 0 30 2 *", "failed to find next date"),
        ("", "empty"),
    ],
)
def test_a_bad_cron_expression_is_a_400_up_front(cron: str, reason: str) -> None:
    calls: list[datetime] = []
    with pytest.raises(
        FourfoldError, match=re.escape(f"bad cron expression {cron!r}: ") + ".*" + re.escape(reason)
    ) as err:
        run_every(cron, calls.append, sleep=lambda s: pytest.fail("slept"))
    assert err.value.status == 400
    assert not calls


# -- partition templates -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("date={date}", "date=2025-03-01"),
        ("date={yesterday}", "date=2025-02-28"),
        ("date={date},hour={hour}", "date=2025-03-01,hour=02"),
        ("ts={ts}", "ts=2025-03-01T02:05:00+00:00"),
        ("day={when:%Y/%m/%d}", "day=2025/03/01"),
        ("day={yesterday:%Y%m%d}", "day=20250228"),
        ("at={when}", "at=2025-03-01T02:05:00+00:00"),
        ("date=2025-04-15", "date=2025-04-15"),
        ("a={{literal}},d={date}", "a={literal},d=2025-03-01"),
        (None, None),
    ],
)
def test_render_partition(template: str | None, expected: str | None) -> None:
    assert render_partition(template, at("2025-03-01T02:05:00")) == expected


def test_render_partition_year_boundary() -> None:
    assert render_partition("date={yesterday}", at("2025-01-01T00:00:00")) == "date=2024-12-31"


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("date={day}", r"unknown placeholder \{day\} in partition template 'date=\{day\}'; known: \{date\}"),
        ("date={}", r"unknown placeholder \{\}"),
        ("date={when.year}", r"unknown placeholder \{when.year\}"),
        ("date={date", "bad partition template"),
        ("h={hour:%Y}", "bad partition template"),
    ],
)
def test_render_partition_errors(template: str, match: str) -> None:
    with pytest.raises(FourfoldError, match=match) as err:
        render_partition(template, at("2025-03-01T02:05:00"))
    assert err.value.status == 400


# -- property: fire times ----------------------------------------------------------------------------------
def _field(lo: int, hi: int, max_step: int) -> st.SearchStrategy[str]:
    n = st.integers(lo, hi)
    return st.one_of(
        st.just("*"),
        n.map(str),
        st.integers(1, max_step).map(lambda k: f"*/{k}"),
        st.tuples(n, n).map(lambda ab: f"{min(ab)}-{max(ab)}"),
        st.lists(n, min_size=2, max_size=3, unique=True).map(lambda xs: ",".join(map(str, sorted(xs)))),
    )


crons = st.tuples(_field(0, 59, 30), _field(0, 23, 12), st.sampled_from(["*", "1-5", "0,6", "*/2"])).map(
    lambda f: f"{f[0]} {f[1]} * * {f[2]}"
)
starts = st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1)).map(lambda t: t.replace(tzinfo=UTC))


@settings(max_examples=60, deadline=None)
@given(cron=crons, start=starts, runs=st.integers(1, 4))
def test_fire_times_increase_and_match_the_expression(cron: str, start: datetime, runs: int) -> None:
    seen, _ = fires(cron, start, runs)
    assert seen[0] > start
    for a, b in itertools.pairwise(seen):
        assert a < b
        assert croniter(cron, a).get_next(datetime) == b  # none skipped: the job takes no time
    for t in seen:
        assert croniter.match(cron, t), (cron, t)
        assert (t.second, t.microsecond) == (0, 0)


# -- a real batch job on the schedule ----------------------------------------------------------------------
def test_a_real_batch_job_commits_one_partition_per_run(tmp_path: Path) -> None:
    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "pkg", name="churn", sample=table)
    LocalRegistry().register(pkg, name="churn", aliases=["production"])
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    cols: dict[str, object] = {"user_id": [f"u{j:03d}" for j in range(200)]}
    cols.update({f: rng.standard_normal(200) for f in FEATURES})
    pq.write_table(pa.table(cols), tmp_path / "in" / "part-000.parquet")

    clock = FakeClock(at("2025-04-15T01:00:00"))
    summaries = []

    def job_for(when: datetime) -> None:
        partition = render_partition("date={yesterday}", when)
        summaries.append(
            run_batch(model="models:/churn/production", input=str(tmp_path / "in"),
                      output=str(tmp_path / "out"), id_cols=("user_id",), partition=partition)
        )  # fmt: skip

    assert run_every("0 2 * * *", job_for, clock=clock, sleep=clock.sleep, max_runs=2) == 2
    parts = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert parts == ["date=2025-04-14", "date=2025-04-15"]
    for name in parts:
        success = tmp_path / "out" / name / "_SUCCESS"
        assert json.loads(success.read_text())["rows_out"] == 200
        assert pq.read_table(sorted((tmp_path / "out" / name).glob("part-*.parquet"))).num_rows == 200
    assert [s.rows_out for s in summaries] == [200, 200]


# -- signals (a real process) ------------------------------------------------------------------------------
_CHILD = """
import sys, time
from fourfold.batch.schedule import run_every, stop_on_signals

stop = stop_on_signals()

def job(when):
    print("running", flush=True)
    time.sleep(float(sys.argv[2]))
    print("finished", flush=True)

print("ready", flush=True)
print("runs", run_every(sys.argv[1], job, stop=stop), flush=True)
"""


def _child(cron: str, job_s: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", _CHILD, cron, str(job_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def _wait_for(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    got = proc.stdout.readline().strip()
    assert got == line, (got, proc.stderr.read() if proc.stderr else "")


def test_sigterm_while_waiting_stops_at_once() -> None:
    proc = _child("0 0 1 1 *", 0)
    try:
        _wait_for(proc, "ready")
        time.sleep(0.2)  # in the sleep
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert time.monotonic() - t0 < 10  # not the months until the next fire time
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "runs 0"
    assert "SIGTERM: stopping after the current run" in err


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_during_a_run_lets_it_finish_and_a_second_aborts(signals: int) -> None:
    proc = _child("* * * * * *", 1.0 + signals / 2)  # every second
    try:
        _wait_for(proc, "ready")
        _wait_for(proc, "running")
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    if signals == 1:
        assert proc.returncode == 0, err
        assert out.split("\n")[:2] == ["finished", "runs 1"]
    else:
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "finished" not in out
