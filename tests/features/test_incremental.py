from __future__ import annotations

import json
import math
import struct
import zlib
from array import array
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourfold.errors import FourfoldError
from fourfold.features.definitions import DefinitionError, FeatureSet, RequestFeature, WindowedFeature
from fourfold.features.incremental import IncrementalEngine, Late, Rejected, Scored, timestamp_ms
from fourfold.features.state import KeyState, Layout, StateError, encode

MIN = 60_000


def feature_set(
    lateness: int | str = "1m",
    windows: Sequence[str] = ("10m", "1h", "1d"),
    name: str = "fraud",
) -> FeatureSet:
    short, mid, long = windows
    return FeatureSet.from_dict(
        {
            "name": name,
            "allowed_lateness": lateness,
            "entities": [{"name": "user", "join_key": "user_id"}],
            "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
            "features": [
                {"name": "amount", "request": "amount"},
                {"name": "n_short", "source": "tx", "agg": "count", "window": short},
                {"name": "sum_mid", "source": "tx", "agg": "sum", "column": "amount", "window": mid},
                {"name": "mean_mid", "source": "tx", "agg": "mean", "column": "amount", "window": mid},
                {"name": "min_short", "source": "tx", "agg": "min", "column": "amount", "window": short},
                {"name": "max_long", "source": "tx", "agg": "max", "column": "amount", "window": long},
                {"name": "tier", "entity": "user"},
                {"name": "merchants", "source": "tx", "agg": "count_distinct", "column": "merchant",
                 "window": mid},
                {"name": "amounts", "source": "tx", "agg": "count_distinct", "column": "amount",
                 "window": long},
                {"name": "last_long", "source": "tx", "agg": "last", "column": "amount", "window": long},
                {"name": "last_short", "source": "tx", "agg": "last", "column": "amount", "window": short},
            ],
        }
    )  # fmt: skip


def ev(key: Any, ts: Any, amount: Any = 1.0, merchant: Any = "m1") -> dict[str, Any]:
    return {"user_id": key, "ts": ts, "amount": amount, "merchant": merchant}


def scored(result: Scored | Late | Rejected) -> dict[str, float]:
    assert isinstance(result, Scored), result
    return result.values


def normal(result: Scored | Late | Rejected) -> tuple[Any, ...]:
    """A comparable form: NaN made equal to itself."""
    if isinstance(result, Scored):
        values = tuple((k, "nan" if math.isnan(v) else v) for k, v in result.values.items())
        return ("scored", result.key, result.ts, values)
    if isinstance(result, Late):
        return ("late", result.lateness_ms)
    return ("rejected", result.reason)


def same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


# -- a brute-force reference that keeps every accepted event forever ---------------------------------------
def reference(fs: FeatureSet, events: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    lateness = fs.allowed_lateness.ms
    history: dict[Any, list[tuple[int, int, Mapping[str, Any]]]] = defaultdict(list)
    newest: dict[Any, int] = {}
    out: list[tuple[Any, ...]] = []
    for seq, e in enumerate(events):
        key, t = e["user_id"], e["ts"]
        if key in newest and t < newest[key] - lateness:
            out.append(("late", newest[key] - lateness - t))
            continue
        values: list[tuple[str, Any]] = []
        for f in fs.features:
            if isinstance(f, RequestFeature):
                v = float(e[f.field])
            elif isinstance(f, WindowedFeature):
                window = [x for x in history[key] if t - f.window.ms <= x[0] < t]
                col = [x[2][f.column] for x in window] if f.column else []
                nums = [float(c) for c in col] if f.agg != "count_distinct" else []
                if not window:
                    v = f.empty_value
                elif f.agg == "count":
                    v = float(len(window))
                elif f.agg == "sum":
                    v = math.fsum(nums)
                elif f.agg == "mean":
                    v = math.fsum(nums) / len(nums)
                elif f.agg == "min":
                    v = min(nums)
                elif f.agg == "max":
                    v = max(nums)
                elif f.agg == "count_distinct":
                    v = float(len(set(col)))
                else:
                    v = float(col[max(range(len(window)), key=lambda i: window[i][:2])])
            else:
                v = math.nan
            values.append((f.name, "nan" if math.isnan(v) else v))
        history[key].append((t, seq, e))
        newest[key] = max(newest.get(key, t), t)
        out.append(("scored", key, t, tuple(values)))
    return out


amounts = st.one_of(
    st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.1, 0.2])
)
merchants = st.sampled_from(["m1", "m2", "", 3, 3.0, 4.5])


@st.composite
def streams(draw: st.DrawFn, max_size: int = 60) -> list[dict[str, Any]]:
    """Mostly increasing times with ties, jitter (out of order) and the odd jump back past the lateness."""
    n = draw(st.integers(0, max_size))
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", 7]), min_size=n, max_size=n))
    gaps = draw(st.lists(st.sampled_from([0, 0, 1, 3, 7, 20]), min_size=n, max_size=n))
    jitter = draw(st.lists(st.sampled_from([0, 0, 0, -2, -9, -40, 5]), min_size=n, max_size=n))
    events, clock = [], 0
    for i in range(n):
        clock += gaps[i]
        events.append(ev(keys[i], clock + jitter[i], draw(amounts), draw(merchants)))
    return events


small = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
lateness = st.sampled_from([0, 3, 10, 50])
SMALL_WINDOWS = ("10ms", "25ms", "60ms")


@small
@given(streams(), lateness)
def test_process_equals_brute_force_over_all_accepted_events(events: list[dict[str, Any]], late: int) -> None:
    fs = feature_set(late, SMALL_WINDOWS)
    engine = IncrementalEngine(fs)
    got = []
    for e in events:
        before = engine.read(e["user_id"], e["ts"])
        result = engine.process(e)
        if isinstance(result, Scored):  # read() gives what process() gives an accepted event at that time
            assert same(before, {f.name: result.values[f.name] for f in fs.windowed})
        got.append(normal(result))
    assert got == reference(fs, events)


@small
@given(streams(), lateness, st.data())
def test_dump_load_mid_stream_continues_identically(
    events: list[dict[str, Any]], late: int, data: Any
) -> None:
    fs = feature_set(late, SMALL_WINDOWS)
    cut = data.draw(st.integers(0, len(events)))
    whole = IncrementalEngine(fs)
    expected = [normal(whole.process(e)) for e in events]
    first = IncrementalEngine(fs)
    got = [normal(first.process(e)) for e in events[:cut]]
    resumed = IncrementalEngine.load(fs, first.dump())
    by_key = IncrementalEngine(fs)  # the same, restored key by key
    for key in list(first.keys()):
        by_key.load_key(key, first.dump_key(key))
    tail = events[cut:]
    assert got + [normal(resumed.process(e)) for e in tail] == expected
    assert got + [normal(by_key.process(e)) for e in tail] == expected
    assert dict(zip(whole.keys(), map(whole.state, whole.keys()), strict=True)) == dict(
        zip(resumed.keys(), map(resumed.state, resumed.keys()), strict=True)
    )


@small
@given(streams(), lateness, st.data())
def test_merge_of_two_halves_equals_the_whole(events: list[dict[str, Any]], late: int, data: Any) -> None:
    fs = feature_set(late, SMALL_WINDOWS)
    cut = data.draw(st.integers(0, len(events)))
    engine = IncrementalEngine(fs)
    snapshots: dict[Any, bytes] = {}
    for i, e in enumerate(events):
        if i == cut:
            snapshots = {k: engine.dump_key(k) for k in list(engine.keys())}
        engine.process(e)
    for key in list(engine.keys()):
        whole = engine.state(key)
        assert whole is not None
        halves = [KeyState(-(2**63), whole.horizon), KeyState(-(2**63), whole.horizon)]
        for t, s, values in whole.events():
            halves[s % 2].fold(t, s, values)
        assert halves[0].merge(halves[1]) == whole == halves[1].merge(halves[0])
        assert whole.merge(whole) == whole
        if key in snapshots:  # an older snapshot of the key adds nothing
            old = IncrementalEngine(fs)
            old.load_key(key, snapshots[key])
            older = old.state(key)
            assert older is not None
            assert whole.merge(older) == whole == older.merge(whole)


def test_merge_refuses_conflicting_events_and_other_definitions() -> None:
    a, b = KeyState(10, 100), KeyState(10, 100)
    a.fold(10, 1, [1.0])
    b.fold(10, 1, [2.0])
    with pytest.raises(StateError, match=r"two different events share timestamp 10 and sequence number 1"):
        a.merge(b)
    with pytest.raises(StateError, match=r"different feature definitions \(horizon 100 vs 5 ms"):
        a.merge(KeyState(10, 5))


# -- the point-in-time test vectors ------------------------------------------------------------------------
def test_events_with_equal_timestamps_do_not_see_each_other() -> None:
    engine = IncrementalEngine(feature_set())
    assert scored(engine.process(ev("u", 1000, 5.0)))["n_short"] == 0.0
    second = scored(engine.process(ev("u", 1000, 7.0)))
    assert (second["n_short"], second["sum_mid"]) == (0.0, 0.0)
    assert math.isnan(second["last_short"])
    third = scored(engine.process(ev("u", 1001, 1.0)))
    assert (third["n_short"], third["sum_mid"], third["last_short"]) == (2.0, 12.0, 7.0)  # later arrival last


def test_window_start_is_inclusive_and_one_ms_earlier_is_excluded() -> None:
    engine = IncrementalEngine(feature_set())
    w = 10 * MIN
    engine.process(ev("edge", 0, 4.0))
    engine.process(ev("outside", 0, 4.0))
    assert scored(engine.process(ev("edge", w, 1.0)))["n_short"] == 1.0
    assert scored(engine.process(ev("outside", w + 1, 1.0)))["n_short"] == 0.0
    assert engine.read("edge", w)["min_short"] == 4.0
    assert math.isnan(engine.read("outside", w + 1)["min_short"])


def test_out_of_order_event_inside_lateness_is_folded_without_changing_earlier_scores() -> None:
    engine = IncrementalEngine(feature_set("1m"))
    first = engine.process(ev("u", 100_000, 1.0))
    second = engine.process(ev("u", 200_000, 2.0))
    late_but_allowed = engine.process(ev("u", 150_000, 4.0))  # 50 s behind, lateness 1 min
    fourth = engine.process(ev("u", 250_000, 8.0))
    assert scored(first)["n_short"] == 0.0
    assert (scored(second)["n_short"], scored(second)["sum_mid"]) == (1.0, 1.0)  # as of arrival: unchanged
    assert scored(late_but_allowed)["n_short"] == 1.0  # sees only the event before it in event time
    assert (scored(fourth)["n_short"], scored(fourth)["sum_mid"]) == (3.0, 7.0)
    assert scored(fourth)["last_short"] == 2.0  # the newest event time, not the newest arrival


def test_event_beyond_lateness_is_late_and_excluded_everywhere() -> None:
    engine = IncrementalEngine(feature_set("1m"))
    engine.process(ev("u", 1_000_000, 1.0))
    result = engine.process(ev("u", 1_000_000 - MIN - 5, 100.0))
    assert result == Late(lateness_ms=5, event=ev("u", 1_000_000 - MIN - 5, 100.0))
    assert isinstance(engine.process(ev("u", 1_000_000 - MIN, 2.0)), Scored)  # exactly at the watermark
    after = scored(engine.process(ev("u", 1_000_001, 0.0)))
    assert (after["n_short"], after["sum_mid"], after["max_long"]) == (2.0, 3.0, 2.0)
    assert engine.read("u", 1_000_001)["sum_mid"] == 3.0
    blob = engine.dump()
    assert (
        scored(IncrementalEngine.load(feature_set("1m"), blob).process(ev("u", 1_000_002)))["sum_mid"] == 3.0
    )


def test_expiry_keeps_what_an_event_exactly_at_the_watermark_can_see() -> None:
    engine = IncrementalEngine(feature_set("1m"))
    day = 24 * 60 * MIN
    engine.process(ev("u", 0, 5.0))
    engine.process(ev("u", day + MIN, 1.0))  # max_ts: events before max_ts - 1m - 1d = 0 may go
    at_watermark = scored(engine.process(ev("u", day, 2.0)))
    assert (at_watermark["max_long"], at_watermark["amounts"], at_watermark["last_long"]) == (5.0, 1.0, 5.0)
    engine.process(ev("u", day + MIN + 1, 3.0))  # now the event at 0 can never be seen again
    state = engine.state("u")
    assert state is not None
    assert state.ts == [day, day + MIN, day + MIN + 1]


# -- aggregation details -----------------------------------------------------------------------------------
def test_output_order_empty_windows_and_unknown_keys() -> None:
    fs = feature_set()
    engine = IncrementalEngine(fs)
    first = scored(engine.process(ev("u", 0, 2.5)))
    assert tuple(first) == fs.names
    assert first["amount"] == 2.5
    assert math.isnan(first["tier"])
    empty = engine.read("nobody", 10)
    assert tuple(empty) == tuple(f.name for f in fs.windowed)
    assert (empty["n_short"], empty["sum_mid"], empty["merchants"]) == (0.0, 0.0, 0.0)
    assert all(math.isnan(empty[n]) for n in ("mean_mid", "min_short", "max_long", "last_long"))
    assert all(type(v) is float for v in first.values())


def test_count_distinct_and_numeric_types() -> None:
    engine = IncrementalEngine(feature_set())
    inputs = [(np.float32(1.5), "m1"), (np.int64(2), np.str_("m1")), (3, 7), (0.5, np.int32(7)), (0.5, 7.5)]
    for i, (amount, merchant) in enumerate(inputs):
        assert isinstance(engine.process(ev("u", i, amount, merchant)), Scored)
    values = scored(engine.process(ev("u", len(inputs))))
    assert values["merchants"] == 3.0  # "m1", 7 and 7.5
    assert values["amounts"] == 4.0
    assert (values["sum_mid"], values["mean_mid"], values["min_short"]) == (7.5, 1.5, 0.5)


def test_int_keys_and_timestamp_types() -> None:
    engine = IncrementalEngine(feature_set())
    base = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    ms = timestamp_ms(base)
    assert ms == 1_714_564_800_000
    assert timestamp_ms(base.replace(tzinfo=None)) == ms  # naive is UTC
    assert timestamp_ms(base.astimezone(timezone(timedelta(hours=2)))) == ms
    assert timestamp_ms(base + timedelta(microseconds=999)) == ms
    assert timestamp_ms(np.datetime64(ms * 1_000_000 + 999_999, "ns")) == ms
    assert timestamp_ms(datetime(1969, 12, 31, 23, 59, 59, 999_500)) == -1  # floored, not truncated
    assert timestamp_ms(np.datetime64(-1, "ns")) == -1
    engine.process(ev(42, base))
    engine.process(ev(np.int64(42), np.datetime64(ms + 10, "ms")))
    result = engine.process(ev(42, ms + 20))
    assert isinstance(result, Scored)
    assert (result.key, result.ts, result.values["n_short"]) == (42, ms + 20, 2.0)
    assert list(engine.keys()) == [42]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"ts": 1, "amount": 1.0, "merchant": "m"}, "key field 'user_id' is missing"),
        (ev(None, 1), "key field 'user_id' is missing"),
        (ev("", 1), "key field 'user_id' must be a non-empty string or an integer, got str ''"),
        (ev(True, 1), "key field 'user_id' must be a non-empty string or an integer, got bool True"),
        ({"user_id": "u", "amount": 1.0, "merchant": "m"}, "timestamp field 'ts' is missing"),
        (ev("u", None), "timestamp field 'ts' is missing"),
        (ev("u", "2024-01-01"), "timestamp field 'ts' must be int milliseconds, a datetime or a numpy "),
        (ev("u", 1.5), "timestamp field 'ts' must be int milliseconds"),
        (ev("u", np.datetime64("NaT")), "timestamp field 'ts' must be int milliseconds"),
        (ev("u", 2**64), "timestamp field 'ts' is out of the int64 millisecond range"),
        (ev("u", 1, "abc"), "field 'amount' must be a finite number, got str 'abc'"),
        (ev("u", 1, math.nan), "field 'amount' must be a finite number, got float nan"),
        (ev("u", 1, -math.inf), "field 'amount' must be a finite number, got float -inf"),
        (ev("u", 1, np.float64("nan")), "field 'amount' must be a finite number, got float64 "),
        (ev("u", 1, True), "field 'amount' must be a finite number, got bool True"),
        (ev("u", 1, None), "field 'amount' must be a finite number, got None"),
        (ev("u", 1, 10**400), "field 'amount' must be a finite number, got int "),
        ({"user_id": "u", "ts": 1, "merchant": "m"}, "field 'amount' is missing"),
        (ev("u", 1, 1.0, None), "field 'merchant' must be a string or a finite number, got None"),
        (ev("u", 1, 1.0, False), "field 'merchant' must be a string or a finite number, got bool False"),
        (ev("u", 1, 1.0, math.inf), "field 'merchant' must be a string or a finite number, got float inf"),
    ],
)
def test_invalid_events_are_rejected_naming_the_field(event: dict[str, Any], reason: str) -> None:
    engine = IncrementalEngine(feature_set())
    engine.process(ev("u", 1000, 3.0))
    before = engine.dump()
    result = engine.process(event)
    assert isinstance(result, Rejected)
    assert result.event is event
    assert result.reason.startswith(reason), result.reason
    assert engine.dump() == before  # nothing changed, not even the sequence counter


def test_request_field_must_be_a_finite_number() -> None:
    fs = FeatureSet.from_dict(
        {
            "name": "req",
            "entities": [{"name": "user", "join_key": "user_id"}],
            "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
            "features": [{"name": "hour", "request": "hour_of_day"}],
        }
    )
    engine = IncrementalEngine(fs)
    assert engine.process({"user_id": "u", "ts": 1, "hour_of_day": 3}) == Scored("u", 1, {"hour": 3.0})
    bad = engine.process({"user_id": "u", "ts": 2, "hour_of_day": "3"})
    assert isinstance(bad, Rejected)
    assert bad.reason == "field 'hour_of_day' must be a finite number, got str '3'"


def test_a_count_with_a_column_counts_events_and_needs_no_column() -> None:
    fs = FeatureSet.from_dict(
        {
            "name": "counts",
            "entities": [{"name": "user", "join_key": "user_id"}],
            "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
            "features": [{"name": "n", "source": "tx", "agg": "count", "column": "x", "window": "1h"}],
        }
    )
    engine = IncrementalEngine(fs)
    engine.process({"user_id": "u", "ts": 1})
    assert engine.process({"user_id": "u", "ts": 2, "x": None}) == Scored("u", 2, {"n": 1.0})


def test_windowed_features_must_come_from_one_source() -> None:
    fs = FeatureSet.from_dict(
        {
            "name": "two",
            "entities": [{"name": "user", "join_key": "user_id"}],
            "sources": [{"name": "tx", "entity": "user"}, {"name": "logins", "entity": "user"}],
            "features": [
                {"name": "n_tx", "source": "tx", "agg": "count", "window": "1h"},
                {"name": "n_logins", "source": "logins", "agg": "count", "window": "1h"},
            ],
        }
    )
    with pytest.raises(
        DefinitionError, match=r"one event source, but the windowed features read 'logins', 'tx'"
    ):
        IncrementalEngine(fs)


# -- state size ----------------------------------------------------------------------------------------------
def test_state_stays_bounded_by_the_longest_window_plus_lateness() -> None:
    fs = feature_set("1m", ("1m", "5m", "10m"))
    engine = IncrementalEngine(fs)
    rng = np.random.default_rng(1)
    times = np.arange(20_000) * 2_000 + rng.integers(-50_000, 50_000, 20_000)  # 11 h, up to 100 s disorder
    keys = rng.integers(0, 3, 20_000)
    horizon = MIN + 10 * MIN
    for i, (k, t) in enumerate(zip(keys.tolist(), times.tolist(), strict=True)):
        engine.process(ev(f"k{k}", t, float(i % 17)))
        if i % 1000 == 999:
            for key in list(engine.keys()):
                st_ = engine.state(key)
                assert st_ is not None
                assert st_.ts[0] >= st_.max_ts - horizon
                assert len(st_) <= horizon // 2_000 + 100
    assert engine.state("k9") is None


# -- checkpoints ---------------------------------------------------------------------------------------------
def _engine_with_state() -> IncrementalEngine:
    engine = IncrementalEngine(feature_set())
    for i in range(20):
        engine.process(ev(f"u{i % 3}", i * 1000, float(i), f"m{i % 4}" if i % 2 else i))
    return engine


def _blob(header: dict[str, Any], arrays: bytes = b"", version: int = 1) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<4sBII", b"FFKS", version, len(head), zlib.crc32(head + arrays)) + head + arrays


def test_dump_key_round_trip_and_errors() -> None:
    engine = _engine_with_state()
    other = IncrementalEngine(feature_set())
    other.load_key("u1", engine.dump_key("u1"))
    assert other.state("u1") == engine.state("u1")
    assert list(other.keys()) == ["u1"]
    assert normal(other.process(ev("u1", 30_000))) == normal(engine.process(ev("u1", 30_000)))
    with pytest.raises(StateError, match=r"holds the state of key 'u1', not of 'u2'"):
        other.load_key("u2", engine.dump_key("u1"))
    with pytest.raises(StateError, match=r"no state for key 'nobody'") as info:
        engine.dump_key("nobody")
    assert info.value.status == 404


def test_corrupt_or_foreign_blobs_are_refused() -> None:
    fs = feature_set()
    blob = _engine_with_state().dump()
    assert IncrementalEngine.load(fs, blob).dump() == blob
    flipped = bytearray(blob)
    flipped[-3] ^= 0x10
    cases: list[tuple[Any, str]] = [
        (b"", "does not start with b'FFKS'"),
        (b"\x80\x04\x95" + b"pickle" * 10, "does not start with b'FFKS'"),
        (blob[:-5], "checksum mismatch"),
        (bytes(flipped), "checksum mismatch"),
        (blob[:4] + b"\x07" + blob[5:], "format version 7 is not supported"),
        ("not bytes", "must be bytes, got str"),
        (_engine_with_state().dump_key("u0"), "holds key state, not engine state"),
        (IncrementalEngine(feature_set(name="other")).dump(), "written for feature set 'other', not 'fraud'"),
        (IncrementalEngine(feature_set("2m")).dump(), "different definition of feature set 'fraud'"),
        (IncrementalEngine(feature_set(windows=("10m", "1h", "2d"))).dump(), "different definition"),
    ]
    for bad, message in cases:
        with pytest.raises(StateError, match=message):
            IncrementalEngine.load(fs, bad)
    with pytest.raises(StateError, match="holds engine state, not key state"):
        IncrementalEngine(fs).load_key("u0", blob)


def test_consistent_checksum_with_inconsistent_content_is_refused() -> None:
    engine = IncrementalEngine(feature_set())
    header = json.loads(engine.dump()[13:])
    good = dict(header, next_seq=5)
    key = {"key": "u", "n": 2, "max_ts": 20, "values": [["m", "m"]]}

    def arrays(ts: list[int], seq: list[int], amounts: list[float]) -> bytes:
        return struct.pack(f"<{len(ts)}q{len(seq)}q{len(amounts)}d", *ts, *seq, *amounts)

    assert IncrementalEngine.load(
        feature_set(), _blob(dict(good, keys=[key]), arrays([10, 20], [1, 2], [1, 2]))
    )
    cases = [
        (dict(good, keys=[key]), arrays([10], [1], [1.0]), "bytes of arrays for 2 events"),
        (dict(good, keys=[key]), arrays([20, 10], [1, 2], [1, 2]), "out of order"),
        (dict(good, keys=[key]), arrays([10, 30], [1, 2], [1, 2]), "past its max_ts"),
        (dict(good, keys=[key]), arrays([10, 20], [1, 9], [1, 2]), "at or above next_seq"),
        (dict(good, keys=[key]), arrays([10, 20], [1, 2], [1, math.nan]), "NaN or infinity"),
        (dict(good, keys=[dict(key, values=[["m", True]])]), arrays([10, 20], [1, 2], [1, 2]), "True"),
        (dict(good, keys=[dict(key, values=[["m"]])]), arrays([10, 20], [1, 2], [1, 2]), "do not match"),
        (dict(good, keys=[dict(key, key="")]), arrays([10, 20], [1, 2], [1, 2]), "invalid or repeated key"),
        (dict(good, keys=[key, key]), arrays([10, 20] * 2, [1, 2] * 2, [1, 2] * 2), "repeated key"),
        (dict(good, next_seq="5"), b"", "next_seq must be an integer"),
        (dict(good, columns=[]), b"", "columns"),
        (dict(good, keys={}), b"", "'keys' is not a list"),
    ]
    for header_, payload, message in cases:
        with pytest.raises(StateError, match=message) as info:
            IncrementalEngine.load(feature_set(), _blob(header_, payload))
        assert isinstance(info.value, FourfoldError)
        assert info.value.status == 422
    with pytest.raises(StateError, match="the header holds NaN"):
        IncrementalEngine.load(feature_set(), _blob(dict(good, next_seq=math.nan)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**7), st.floats(-1e6, 1e6, allow_nan=False)), min_size=0, max_size=30
    ),
    st.one_of(st.text(min_size=1, max_size=12), st.integers(-(2**63), 2**63 - 1)),
)
def test_a_key_blob_is_the_documented_format(events: list[tuple[int, float]], key: str | int) -> None:
    numeric = FeatureSet.from_dict(
        {
            "name": "numeric",
            "entities": [{"name": "user", "join_key": "user_id"}],
            "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
            "features": [
                {"name": "n_1h", "source": "tx", "agg": "count", "window": "1h"},
                {"name": "sum_1h", "source": "tx", "agg": "sum", "column": "amount", "window": "1h"},
                {"name": "max_1d", "source": "tx", "agg": "max", "column": "fee", "window": "1d"},
            ],
        }
    )
    for fs in (numeric, feature_set()):  # numeric columns only (the fast path), and a distinct column
        layout = Layout.of(fs)
        state = KeyState(max_ts=0, horizon=layout.horizon)
        for seq, (t, amount) in enumerate(events, start=1):
            state.fold(t, seq, [amount] * len(layout.columns))
        cols = state.columns or [[] for _ in layout.columns]
        header = {  # one JSON header, then the arrays (the state module's docstring)
            "kind": "key",
            "feature_set": layout.feature_set,
            "fingerprint": layout.fingerprint,
            "columns": [
                [c, "f64" if n else "value"] for c, n in zip(layout.columns, layout.numeric, strict=True)
            ],
            "next_seq": len(events) + 1,
            "keys": [
                {
                    "key": key,
                    "n": len(state.ts),
                    "max_ts": state.max_ts,
                    "values": [c for c, n in zip(cols, layout.numeric, strict=True) if not n],
                }
            ],
        }
        head = orjson.dumps(header)
        floats = [array("d", c).tobytes() for c, n in zip(cols, layout.numeric, strict=True) if n]
        body = head + array("q", state.ts).tobytes() + array("q", state.seq).tobytes() + b"".join(floats)
        expected = struct.pack("<4sBII", b"FFKS", 1, len(head), zlib.crc32(body)) + body
        assert encode(layout, [(key, state)], kind="key", next_seq=len(events) + 1) == expected


_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, -1e300, 1e299, 5e-324, -0.0]),
    st.text(max_size=3),
)


_PLAIN = st.fixed_dictionaries(
    {
        "user_id": st.text(min_size=1, max_size=5),
        "ts": st.integers(-(2**63), 2**63 - 1),
        "amount": st.floats(-1e299, 1e299),
        "fee": st.floats(-1e299, 1e299),
    }
)


def test_a_plain_event_takes_the_compiled_check() -> None:
    engine = IncrementalEngine(feature_set())  # a count_distinct column: always the rules
    assert engine._plain(ev("u1", 5, 2.0)) is None
    numeric = IncrementalEngine(FeatureSet.from_dict(_NUMERIC))
    event = {"user_id": "u1", "ts": 5, "amount": 2.0, "fee": 0.5}
    assert numeric._plain(event) == ("u1", 5, [0.5], [2.0]) == numeric._validate(event)


_NUMERIC = {
    "name": "numeric",
    "entities": [{"name": "user", "join_key": "user_id"}],
    "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
    "features": [
        {"name": "amount", "request": "amount"},
        {"name": "sum_1h", "source": "tx", "agg": "sum", "column": "fee", "window": "1h"},
    ],
}


@settings(max_examples=300, deadline=None)
@given(st.one_of(_PLAIN, st.dictionaries(st.sampled_from(["user_id", "ts", "amount", "fee"]), _ANY)))
def test_the_compiled_check_of_a_plain_event_agrees_with_the_rules(event: dict[str, Any]) -> None:
    engine = IncrementalEngine(FeatureSet.from_dict(_NUMERIC))
    fast = engine._plain(event)
    assert fast is None or fast == engine._validate(event)  # None: the rules decide, with the reason


def test_request_fields_left_to_the_callers_check_are_neither_checked_nor_returned() -> None:
    fs = FeatureSet.from_dict(
        {
            "name": "req",
            "entities": [{"name": "user", "join_key": "user_id"}],
            "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
            "features": [
                {"name": "device", "request": "device"},
                {"name": "n", "source": "tx", "agg": "count", "window": "1h"},
            ],
        }
    )
    event = {"user_id": "u", "ts": 1000, "device": None}
    own = IncrementalEngine(fs).process(event)
    assert isinstance(own, Rejected)
    assert "'device'" in own.reason
    left = IncrementalEngine(fs, request_fields=False)
    assert scored(left.process(event)) == {"n": 0.0}
    assert scored(left.process({**event, "ts": 2000, "device": "text"})) == {"n": 1.0}
    refused = left.process({"user_id": "u", "device": 1.0})
    assert isinstance(refused, Rejected)
    assert left.about_key_or_time(refused.reason)
