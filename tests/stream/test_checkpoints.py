"""Checkpoints: the outbox encoding round-trips any records; a claim fences out the former owner, whose
checkpoint then writes nothing - neither the offsets nor the keys' state."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourfold.features.stores import FencedError, MemoryStore, Write
from fourfold.stream.checkpoints import Checkpoints, decode_outbox, encode_outbox
from fourfold.stream.logs.base import OutRecord

records = st.lists(st.tuples(st.integers(0, 1), st.builds(OutRecord, st.binary(max_size=50), st.binary())))


@given(records)
def test_the_outbox_round_trips(items: list[tuple[int, OutRecord]]) -> None:
    assert decode_outbox(encode_outbox(items)) == items


def test_a_claim_fences_the_former_owner_out() -> None:
    store = MemoryStore()
    old, new = Checkpoints(store, "g", "log"), Checkpoints(store, "g", "log")
    assert old.claim(0).offset is None
    out = [(0, OutRecord(b"e1", b"{}"))]
    old.commit([Write("fraud", {"u1": {"_state": b"a"}}, {"u1": 1})], {0: 10}, {0: out}, {0: 5})
    restored = new.claim(0)
    assert (restored.epoch, restored.offset, restored.outbox, restored.marks) == (2, 10, out, {0: 5})
    with pytest.raises(FencedError):  # the former owner, stalled, comes back with a batch
        old.commit([Write("fraud", {"u1": {"_state": b"b"}}, {"u1": 2})], {0: 20}, {0: []}, {})
    [state] = store.read("fraud", ["u1"])
    assert state is not None
    assert state.values == {"_state": b"a"}
    assert new.claim(0).offset == 10  # and its offsets did not land either
