"""Hot keys: few keys, many events each, so that the incremental engine's windows hold many events and its
sliding ranges carry the load (running exact sums, value counts, min/max deques, deferred expiry, inserts
of out-of-order events). Checked against the brute-force reference of ``tests/pit.py`` and, bit for bit,
against the engine's bisect path (C-level passes over each window, the engine as it was before it slid)."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourfold.features import FeatureSet
from fourfold.features.incremental import IncrementalEngine, Late, Rejected, Scored
from fourfold.features.state import KeyState
from pit import reference

# plain windows and tiles (the tail hops: the window reaches back up to W + hop - 1); each aggregation over
# a plain window and a tile, so every running aggregate slides over both kinds
WINDOWS = {"w30": ("30ms", None), "w90": ("90ms", None), "t120": ("120ms", "25ms"), "t45": ("45ms", "45ms")}
AGGS = [
    ("count", None, ("w30", "t120")),
    ("sum", "amount", ("w90", "t45")),
    ("mean", "amount", ("w30", "t120")),
    ("min", "amount", ("w90", "t120")),
    ("max", "amount", ("w30", "t45")),
    ("count_distinct", "amount", ("w90", "t45")),
    ("count_distinct", "merchant", ("w30",)),
    ("last", "amount", ("w30", "t120")),
]
NEVER = 10**9  # a _track_min no state reaches: every event takes the bisect path


def hot_feature_set(lateness_ms: int) -> FeatureSet:
    features: list[dict[str, Any]] = [{"name": "amount", "request": "amount"}]
    for agg, column, windows in AGGS:
        for w in windows:
            window, hop = WINDOWS[w]
            f: dict[str, Any] = {
                "name": f"{agg}_{column or 'n'}_{w}",
                "source": "tx",
                "agg": agg,
                "window": window,
            }
            f.update({"column": column} if column else {}, **({"hop": hop} if hop else {}))
            features.append(f)
    features.append({"name": "tier", "entity": "user"})
    return FeatureSet.from_dict(
        {
            "name": "hot",
            "allowed_lateness": f"{lateness_ms}ms",
            "entities": [{"name": "user", "join_key": "user_id"}],
            "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
            "features": features,
        }
    )


def engine_of(fs: FeatureSet, track_min: int) -> IncrementalEngine:
    engine = IncrementalEngine(fs)
    engine._track_min = track_min  # how big a state gets before its windows slide (0: from the start)
    return engine


def shown(result: Scored | Late | Rejected) -> tuple[Any, ...]:
    """Bit for bit: ``repr`` tells -0.0 from 0.0 and shows every NaN alike."""
    if isinstance(result, Scored):
        return ("scored", result.key, result.ts, tuple((k, repr(v)) for k, v in result.values.items()))
    if isinstance(result, Late):
        return ("late", result.lateness_ms)
    return ("rejected", result.reason)


def as_reference(fs: FeatureSet, result: Scored | Late | Rejected) -> dict[str, Any]:
    assert not isinstance(result, Rejected), result.reason
    if isinstance(result, Late):
        return {"late": True, "lateness_ms": result.lateness_ms}
    names = [f.name for f in (*fs.windowed, *fs.request)]
    return {"late": False, "lateness_ms": 0} | {n: nan_free(result.values[n]) for n in names}


def nan_free(v: float) -> Any:
    return "nan" if math.isnan(v) else v


def reference_by_key(events: Sequence[dict[str, Any]], fs: FeatureSet) -> list[dict[str, Any]]:
    """``pit.reference``, run key by key (a key's values depend only on its own events): the same rows."""
    by_key: dict[Any, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        by_key[e["user_id"]].append(i)
    out: list[dict[str, Any]] = [{} for _ in events]
    for rows in by_key.values():
        for i, row in zip(rows, reference([events[i] for i in rows], fs, "user_id", "ts"), strict=True):
            out[i] = {k: nan_free(v) if isinstance(v, float) else v for k, v in row.items()}
    return out


SPECIAL = [0.0, -0.0, 0.1, 0.2, 0.3, 1e16, -1e16, 1e-9, 7.0, -7.0, 3]
amounts = st.one_of(
    st.integers(-5, 5),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from(SPECIAL),
    st.sampled_from([1e300, -1e300, 1.5e300]),  # near overflow: that key's sums take the bisect path
)
KEYS = ["h", "h", "h", "h", "h", "a", 7]  # mostly one hot key
STEPS = [0, 0, 1, 1, 1, 2, 3, 5, 25, 30, 45, 90, 121]  # ties, and a window's or a hop's length (edges)
JITTER = [0] * 8 + [-1, -3, -10, -25, -45, -100, -400]  # back inside and beyond the lateness
MERCHANTS = ["m1", "m2", "", 3, 3.0, 0.0, -0.0, 4.5]
OPS = [""] * 12 + ["round trip", "reload", "read"]
RARE_OPS = [""] * 100 + ["round trip", "reload", "read"]  # long runs of sliding between rebuilds


def make_stream(
    n: int, pick: Callable[[Sequence[Any]], Any], amount: Callable[[], Any], trend: float, ops: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Events of mostly one key, and an operation after each; with a trend, amounts mostly rise or fall (long
    min/max deques)."""
    events, after, clock = [], [], 10_000
    for i in range(n):
        clock += pick(STEPS)
        x = float(trend * i) if trend and pick([0, 1, 1, 1]) else amount()
        events.append(
            {"user_id": pick(KEYS), "ts": clock + pick(JITTER), "amount": x, "merchant": pick(MERCHANTS)}
        )
        after.append(pick(ops))
    return events, after


@st.composite
def hot_streams(draw: st.DrawFn, max_size: int) -> tuple[list[dict[str, Any]], list[str]]:
    n = draw(st.integers(0, max_size))
    trend = draw(st.sampled_from([0.0, 0.0, 0.25, -0.25]))
    return make_stream(n, lambda xs: draw(st.sampled_from(xs)), lambda: draw(amounts), trend, OPS)


@st.composite
def long_hot_streams(draw: st.DrawFn, max_size: int) -> tuple[list[dict[str, Any]], list[str]]:
    """As :func:`hot_streams`, longer: the events come from a drawn seed (too many for hypothesis' buffer)."""
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(max_size // 2, max_size))
    trend = draw(st.sampled_from([0.0, 0.0, 0.25, -0.25]))

    def amount() -> Any:
        kind = rnd.randrange(4)
        return (
            rnd.randint(-5, 5) if kind == 0 else rnd.uniform(-1e6, 1e6) if kind == 1 else rnd.choice(SPECIAL)
        )

    return make_stream(n, rnd.choice, amount, trend, RARE_OPS)


hot = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
lateness = st.sampled_from([0, 5, 40, 150])  # 150: out-of-order events land before some windows' start
track_min = st.sampled_from([0, 1, 4, 32])


def run(
    engine: IncrementalEngine,
    events: Sequence[dict[str, Any]],
    ops: Sequence[str],
    seqs: Sequence[int | None],
) -> tuple[IncrementalEngine, list[Scored | Late | Rejected]]:
    """Every event through ``engine``, with each event's operation after it: a key's state dumped and loaded
    back (its windows rebuilt), the whole engine dumped and loaded, or a read before the event."""
    fs, track = engine.feature_set, engine._track_min
    results: list[Scored | Late | Rejected] = []
    for e, op, seq in zip(events, ops, seqs, strict=True):
        before = engine.read(e["user_id"], e["ts"]) if op == "read" else None
        result = engine.process(e, seq=seq)
        if before is not None and isinstance(result, Scored):
            assert [repr(v) for v in before.values()] == [repr(result.values[n]) for n in before]
        results.append(result)
        if op == "round trip" and engine.state(e["user_id"]) is not None:
            engine.load_key(e["user_id"], engine.dump_key(e["user_id"]))
        elif op == "reload":
            engine = IncrementalEngine.load(fs, engine.dump())
            engine._track_min = track
    return engine, results


def sequence_numbers(data: st.DataObject, n: int) -> list[int | None]:
    """The engine's own numbering, or explicit ones as a log's offsets + 1 (increasing, with gaps)."""
    if not data.draw(st.booleans(), label="explicit seqs"):
        return [None] * n
    gaps = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n), label="seq gaps")
    out, at = [], data.draw(st.integers(1, 50), label="first seq")
    for g in gaps:
        out.append(at)
        at += g
    return out


@hot
@given(hot_streams(max_size=160), lateness, track_min, st.data())
def test_hot_keys_equal_the_brute_force_reference(
    stream: tuple[list[dict[str, Any]], list[str]], late: int, track: int, data: st.DataObject
) -> None:
    events, ops = stream
    fs = hot_feature_set(late)
    seqs = sequence_numbers(data, len(events))
    engine, got = run(engine_of(fs, track), events, ops, seqs)
    assert [as_reference(fs, r) for r in got] == reference_by_key(events, fs)
    # bit for bit the bisect path, and the same state (its blob byte for byte: deferred expiry settled)
    slow, want = run(engine_of(fs, NEVER), events, [""] * len(events), seqs)
    assert [shown(r) for r in got] == [shown(r) for r in want]
    assert engine.dump() == slow.dump()


@hot
@given(long_hot_streams(max_size=800), lateness, track_min, st.data())
def test_long_hot_streams_equal_the_bisect_path_bit_for_bit(
    stream: tuple[list[dict[str, Any]], list[str]], late: int, track: int, data: st.DataObject
) -> None:
    events, ops = stream
    fs = hot_feature_set(late)
    seqs = sequence_numbers(data, len(events))
    engine, got = run(engine_of(fs, track), events, ops, seqs)
    slow, want = run(engine_of(fs, NEVER), events, [""] * len(events), seqs)
    assert [shown(r) for r in got] == [shown(r) for r in want]
    for key in {e["user_id"] for e in events}:
        assert engine.state(key) == slow.state(key)
        if engine.state(key) is not None:
            assert engine.dump_key(key) == slow.dump_key(key)


# -- deterministic cases -------------------------------------------------------------------------------------
def ev(ts: int, amount: float, key: str = "h", merchant: Any = "m") -> dict[str, Any]:
    return {"user_id": key, "ts": ts, "amount": amount, "merchant": merchant}


def both(
    fs: FeatureSet, events: Sequence[dict[str, Any]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    fast = engine_of(fs, 0)
    slow = engine_of(fs, NEVER)
    return [shown(fast.process(e)) for e in events], [shown(slow.process(e)) for e in events]


def test_signed_zeros_and_cancellation_are_bit_identical() -> None:
    fs = hot_feature_set(0)
    amounts = [-0.0, -0.0, 0.0, -0.0, 1e16, 1.0, -1e16, -1.0, 0.1, 0.2, -0.3, -0.0, 5e-324, -5e-324]
    fast, slow = both(fs, [ev(10 + 7 * i, a) for i, a in enumerate(amounts)])
    assert fast == slow
    got = engine_of(fs, 0)
    for i, a in enumerate(amounts):
        got.process(ev(10 + 7 * i, a))
    end = 10 + 7 * len(amounts)
    window = [a for i, a in enumerate(amounts) if end - 90 <= 10 + 7 * i < end]
    assert got.read("h", end)["sum_amount_w90"] == math.fsum(window)


def test_a_monotonic_run_longer_than_the_deque_build_passes() -> None:
    fs = hot_feature_set(0)
    up = [ev(1000 + i, float(i)) for i in range(200)]
    down = [ev(2000 + i, float(-i)) for i in range(200)]
    fast, slow = both(fs, up + down + [ev(3000, 0.0)])
    assert fast == slow


def test_huge_values_take_the_exact_path_and_overflow_as_before() -> None:
    fs = hot_feature_set(40)
    events = [ev(10 + i, 1e300 * (i % 3 + 1)) for i in range(60)]
    fast, slow = both(fs, events)
    assert fast == slow
    big = 1.7e308
    for engine in (engine_of(fs, 0), engine_of(fs, NEVER)):
        # in time order the window sums 1, 2, big, big, -big: its first partial sum overflows; the running
        # sum, which took -big before the out-of-order big, would not
        for e in [ev(90, 1.0), ev(95, 2.0), ev(100, big), ev(120, -big), ev(125, 0.0), ev(110, big)]:
            engine.process(e)
        with pytest.raises(OverflowError):
            engine.process(ev(130, 1.0))


@pytest.mark.parametrize("sign", [1.0, -1.0])  # min, then (the values negated) max
def test_zeros_of_either_sign_are_the_extreme_min_and_max_would_pick(sign: float) -> None:
    fs = hot_feature_set(150)
    ramp = [ev(1000 + i, -9.0 + i) for i in range(9)]  # a deque of nine links: the build's passes run out
    zeros = [ev(1009, -0.0), ev(1010, 0.0), ev(1011, 5.0)]
    # out of order: zeros land before a zero of the other sign (min and max pick the first), and after it
    late = [ev(1030, 1.0), ev(1026, 0.0), ev(1025, -0.0), ev(1027, -0.0), ev(1028, 0.0), ev(1031, 2.0)]
    reads = [ev(1040 + 10 * i, 1.0) for i in range(12)]
    events = [dict(e, amount=sign * e["amount"]) for e in [*ramp, *zeros, *late, *reads]]
    slow = engine_of(fs, NEVER)
    want = [shown(slow.process(e)) for e in events]
    for cut in range(len(ramp) + len(zeros) + len(late) + 1):  # windows built from a state loaded after each
        engine = engine_of(fs, NEVER)
        got = [shown(engine.process(e)) for e in events[:cut]]
        if cut:
            engine.load_key("h", engine.dump_key("h"))
        engine._track_min = 0
        assert got + [shown(engine.process(e)) for e in events[cut:]] == want


def test_deferred_expiry_is_settled_wherever_the_state_is_seen() -> None:
    fs = hot_feature_set(0)
    engine = engine_of(fs, 0)
    for i in range(1000):
        engine.process(ev(i, float(i % 7)))
    st_ = engine.state("h")
    assert st_ is not None
    horizon = fs.max_window.ms
    assert st_.ts[0] >= st_.max_ts - horizon
    assert st_.ts == list(range(999 - horizon, 1000))


def test_out_of_order_inserts_keep_the_windows_right() -> None:
    fs = hot_feature_set(150)
    events = [ev(1000 + 2 * i, float(i % 11)) for i in range(100)]
    # every kind of insert: inside the windows, before some windows' start, on a start, tied at the head
    late = [
        ev(1150, -5.0),
        ev(1060, 99.0),
        ev(1198 - 90, 50.0),
        ev(1198, 3.0),
        ev(1199, -99.0),
        ev(1052, 0.5),
    ]
    fast, slow = both(fs, [*events, *late, ev(1200, 1.0), ev(1201, 2.0), ev(1300, 0.0)])
    assert fast == slow


def test_put_state_rebuilds_the_windows_and_raises_the_counter() -> None:
    fs = hot_feature_set(0)
    engine = engine_of(fs, 0)
    for i in range(50):
        engine.process(ev(10 + i, float(i)))
    state = KeyState(100, fs.max_window.ms + 0, [90, 95], [500, 501], [[1.0, 2.0], ["m", "n"]])
    engine.put_state("h", state)
    result = engine.process(ev(100, 4.0))
    assert isinstance(result, Scored)
    assert (result.values["count_n_w30"], result.values["sum_amount_w90"]) == (2.0, 3.0)
    assert engine.state("h") is not None
    assert engine.state("h").seq[-1] == 502  # type: ignore[union-attr]


# -- explicit sequence numbers -------------------------------------------------------------------------------
def test_explicit_seqs_order_ties_and_keep_the_counter_above_them() -> None:
    fs = hot_feature_set(10)
    engine = engine_of(fs, 0)
    engine.process(ev(100, 1.0), seq=7)
    engine.process(ev(100, 2.0, key="a"), seq=3)  # another key: its own order
    engine.process(ev(100, 3.0), seq=40)
    result = engine.process(ev(101, 0.0))  # the engine's own number: above every one it has seen
    assert isinstance(result, Scored)
    assert result.values["last_amount_w30"] == 3.0  # ties: the greater seq is the later arrival
    st_ = engine.state("h")
    assert st_ is not None
    assert st_.seq == [7, 40, 41]
    other = IncrementalEngine(fs)
    other.load_key("h", engine.dump_key("h"))
    with pytest.raises(
        ValueError, match=r"seq 41 of an event of key 'h' is not greater than .* newest seq 41"
    ):
        other.process(ev(102, 1.0), seq=41)
    assert isinstance(other.process(ev(102, 1.0), seq=42), Scored)


@pytest.mark.parametrize("bad", [0, -1, 2**63, True, 1.0, "5", np.int64(0)])
def test_invalid_seqs_are_refused_before_anything_changes(bad: Any) -> None:
    engine = engine_of(hot_feature_set(0), 0)
    engine.process(ev(1, 1.0))
    before = engine.dump()
    with pytest.raises(ValueError, match=r"seq must be an int from 1 to 2\*\*63 - 1 .*, got "):
        engine.process(ev(2, 1.0), seq=bad)
    assert engine.dump() == before
    assert isinstance(engine.process(ev(2, 1.0), seq=np.int64(5)), Scored)  # any integer type
    assert engine.dump_key("h") == IncrementalEngine.load(engine.feature_set, engine.dump()).dump_key("h")


def test_a_seq_not_above_the_newest_is_refused_and_changes_nothing() -> None:
    engine = engine_of(hot_feature_set(0), 0)
    for i in range(40):
        engine.process(ev(i, 1.0), seq=10 + i)
    before = engine.dump()
    for seq in (49, 12, 1):
        with pytest.raises(
            ValueError, match=f"seq {seq} of an event of key 'h' is not greater than the key's"
        ):
            engine.process(ev(100, 1.0), seq=seq)
    assert engine.dump() == before
    rejected = engine.process({"user_id": "h", "ts": 100, "amount": "x", "merchant": "m"}, seq=50)
    assert isinstance(rejected, Rejected)
    assert engine.dump() == before  # a rejected event changes nothing, not even the counter
