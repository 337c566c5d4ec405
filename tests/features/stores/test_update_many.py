"""``OnlineFeatures.update_many``: a batch of events scored and folded like the incremental engine does them
one by one, with one store read and one store write for the whole batch, on every store backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from fourfold.features import FeatureSet, IncrementalEngine, Late, Rejected, Scored
from fourfold.features.online import STATE_FIELD, OnlineFeatures
from fourfold.features.stores import OnlineStore, Record, WriteResult
from pit import feature_set


class Counting:
    """An :class:`OnlineStore` that records the reads and writes it passes on to a real one."""

    def __init__(self, store: OnlineStore) -> None:
        self.store = store
        self.reads: list[list[str]] = []
        self.writes: list[tuple[dict[str, Any], Any]] = []

    def read(
        self, namespace: str, entities: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[Record | None]:
        self.reads.append(list(entities))
        return self.store.read(namespace, entities, fields)

    def write(
        self,
        namespace: str,
        rows: Mapping[str, Mapping[str, Any]],
        *,
        event_time_ms: Any,
        ttl_s: float | None = None,
    ) -> WriteResult:
        self.writes.append((dict(rows), event_time_ms))
        return self.store.write(namespace, rows, event_time_ms=event_time_ms, ttl_s=ttl_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _log(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 3000, n)) - rng.integers(0, 120, n) * (rng.random(n) < 0.15)
    users = rng.choice(["u0", "u1", "u2", "hot", "hot", "hot"], n)
    return [
        {"user_id": str(u), "ts": int(t), "amount": float(a), "merchant": str(m)}
        for u, t, a, m in zip(users, ts, rng.lognormal(2, 1, n), rng.choice(["a", "b", "c"], n), strict=True)
    ]


def _same(got: Scored | Late | Rejected, want: Scored | Late | Rejected) -> None:
    assert type(got) is type(want)
    if isinstance(want, Scored):
        assert isinstance(got, Scored)
        assert [repr(v) for v in got.values.values()] == [repr(v) for v in want.values.values()]
    else:
        assert got == want


def test_a_batch_is_one_read_and_one_write_and_scores_as_the_engine(
    store: OnlineStore, namespace: str
) -> None:
    fs = FeatureSet.from_dict({**feature_set("50ms").to_dict(), "name": namespace})
    events = _log(900, seed=3)
    head = pa.Table.from_pylist(events[:300])
    counting = Counting(store)
    online = OnlineFeatures(fs, counting)  # type: ignore[arg-type]
    online.materialize(head)
    engine = IncrementalEngine(fs)
    for row in events[:300]:
        engine.process(row)
    for start in range(300, 900, 150):  # poll batches
        batch = events[start : start + 150]
        counting.reads.clear()
        counting.writes.clear()
        got = online.update_many(batch)
        for g, e in zip(got, batch, strict=True):
            _same(g, engine.process(e))
        assert counting.reads == [
            sorted({e["user_id"] for e in batch}, key=[e["user_id"] for e in batch].index)
        ]
        [(rows, times)] = counting.writes
        changed = {g.key for g in got if isinstance(g, Scored)}
        assert set(rows) == changed
        for key in changed:
            state = engine.state(key)
            assert state is not None
            assert times[key] == state.max_ts  # the store's event time is the key's newest event
            written = IncrementalEngine(fs)
            written.load_key(key, rows[key][STATE_FIELD])
            got = written.state(key)
            assert got is not None  # the same events (numbered otherwise: materialize counts every row)
            assert (got.max_ts, got.ts, got.columns) == (state.max_ts, state.ts, state.columns)
    for key in ["u0", "u1", "u2", "hot"]:
        [record] = store.read(namespace, [key], [STATE_FIELD])
        assert record is not None
        state = engine.state(key)
        assert state is not None
        assert record.event_time_ms == state.max_ts
        [row] = online.get([key], at_ms=5000)
        assert row == engine.read(key, 5000)


def test_update_is_a_batch_of_one_and_equals_update_many(store: OnlineStore, namespace: str) -> None:
    fs = FeatureSet.from_dict({**feature_set("50ms").to_dict(), "name": namespace})
    events = _log(200, seed=4)
    one = OnlineFeatures(fs, store)
    other = OnlineFeatures(FeatureSet.from_dict({**fs.to_dict(), "name": namespace + "b"}), store)
    for e in events:
        _same(one.update(e), other.update_many([e])[0])
    assert [one.get([k], at_ms=4000) for k in ("u0", "hot")] == [
        other.get([k], at_ms=4000) for k in ("u0", "hot")
    ]


def test_late_rejected_and_keyless_events_write_nothing(store: OnlineStore, namespace: str) -> None:
    fs = FeatureSet.from_dict({**feature_set("0ms").to_dict(), "name": namespace})
    counting = Counting(store)
    online = OnlineFeatures(fs, counting)  # type: ignore[arg-type]
    assert online.update_many([]) == []
    assert counting.reads == []
    online.update_many([{"user_id": "u", "ts": 100, "amount": 1.0, "merchant": "m"}])
    counting.writes.clear()
    results = online.update_many(
        [
            {"user_id": "u", "ts": 50, "amount": 1.0, "merchant": "m"},  # late
            {"user_id": "u", "ts": 120, "amount": "x", "merchant": "m"},  # rejected
            {"ts": 130, "amount": 1.0, "merchant": "m"},  # no key
            {"user_id": "", "ts": 130, "amount": 1.0, "merchant": "m"},  # an empty key: never read
        ]
    )
    assert [type(r) for r in results] == [Late, Rejected, Rejected, Rejected]
    assert counting.reads[-1] == ["u"]
    assert counting.writes == []
    [after] = online.update_many([{"user_id": 7, "ts": 140, "amount": 2.0, "merchant": "m"}])  # an int key
    assert isinstance(after, Scored)
    assert after.key == "7"
