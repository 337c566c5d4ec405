"""The metrics buffer: applying a flush's observations in bulk equals observing them one by one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from fourfold.online.metrics import _LATENCY, _observe_many


def _state(h: Histogram) -> dict[str, float]:
    return {f"{s.name}{sorted(s.labels.items())}": s.value for m in h.collect() for s in m.samples
            if not s.name.endswith("_created")}  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.floats(0, 2, allow_nan=False), st.sampled_from([*_LATENCY, 0.0, 5.0])), max_size=60)
)
def test_bulk_observe_equals_one_by_one(values: list[float]) -> None:
    one, bulk = (Histogram("h", "h", buckets=_LATENCY, registry=CollectorRegistry()) for _ in range(2))
    for v in values:
        one.observe(v)
    _observe_many(bulk, values)
    a, b = _state(one), _state(bulk)
    assert a.keys() == b.keys()
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(a[k])), k
