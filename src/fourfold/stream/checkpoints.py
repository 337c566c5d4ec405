"""Per-partition checkpoints in the online store, written in one transaction with the state they cover.

A partition's checkpoint (namespace ``_stream__<group>``, entity ``<log>#<partition>``) holds:

* ``epoch`` - raised by every process that takes the partition over (:meth:`Checkpoints.claim`); each
  checkpoint write is fenced on it, so a stalled former owner can never overwrite the new owner's state;
* ``offset`` - the next input offset: the stored per-key state includes every event before it;
* ``outbox`` - the records the last checkpointed batch produced (decisions and dead letters), and
  ``marks`` - where each rewindable sink (a file) stood before them.

A batch is checkpointed *before* its records are delivered. A crash after the checkpoint is repaired on
restore: the file sinks are cut back to their marks and the outbox is delivered again (byte-identical
records), and reading continues at ``offset`` - an event is never folded into a window twice. A crash
before the checkpoint loses nothing either: the batch is read and computed again from the same state.
"""

from __future__ import annotations

import json
import re
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fourfold.features.stores.base import Fence, FencedError, InValue, OnlineStore, Value, Write
from fourfold.stream.logs.base import OutRecord

__all__ = ["Checkpoints", "Restored", "decode_outbox", "encode_outbox"]

_ITEM = struct.Struct("<BII")
_CLAIM_TRIES = 20


@dataclass(frozen=True)
class Restored:
    """What a claimed partition's checkpoint says."""

    epoch: int
    offset: int | None
    outbox: list[tuple[int, OutRecord]] = field(default_factory=list)  # (sink index, record)
    marks: dict[int, int] = field(default_factory=dict)  # sink index -> position before the outbox


def encode_outbox(items: Iterable[tuple[int, OutRecord]]) -> bytes:
    parts: list[bytes] = []
    for sink, r in items:
        parts += (_ITEM.pack(sink, len(r.key), len(r.value)), r.key, r.value)
    return b"".join(parts)


def decode_outbox(blob: bytes) -> list[tuple[int, OutRecord]]:
    out: list[tuple[int, OutRecord]] = []
    pos, view = 0, memoryview(blob)
    while pos < len(blob):
        sink, nk, nv = _ITEM.unpack_from(blob, pos)
        pos += _ITEM.size
        key = bytes(view[pos : pos + nk])
        pos += nk
        out.append((sink, OutRecord(key, bytes(view[pos : pos + nv]))))
        pos += nv
    return out


class Checkpoints:
    """The checkpoints of one consumer group over one log, in ``store``."""

    def __init__(self, store: OnlineStore, group: str, log: str) -> None:
        self.store = store
        self.namespace = "_stream__" + re.sub(r"[^A-Za-z0-9_.-]", "_", group)
        self.log = log
        self.epochs: dict[int, int] = {}
        #: when this process last checkpointed (ms since the epoch), for the checkpoint-age metric
        self.last_ms: int | None = None

    def entity(self, partition: int) -> str:
        return f"{self.log}#{partition}"

    def claim(self, partition: int) -> Restored:
        """Take ``partition`` over: raise its epoch (fencing out any former owner) and read what its
        checkpoint holds."""
        entity = self.entity(partition)
        for _ in range(_CLAIM_TRIES):
            [record] = self.store.read(self.namespace, [entity])
            values: dict[str, Value] = dict(record.values) if record is not None else {}
            old = values.get("epoch")
            epoch = int(old) + 1 if isinstance(old, float) else 1
            try:
                self.store.transact(
                    [Write(self.namespace, {entity: {"epoch": float(epoch)}}, 0)],
                    fences=[Fence(self.namespace, entity, "epoch", old)],
                )
            except FencedError:
                continue  # another process claimed it at the same moment: read again
            self.epochs[partition] = epoch
            offset = values.get("offset")
            outbox = values.get("outbox")
            marks = values.get("marks")
            return Restored(
                epoch,
                int(offset) if isinstance(offset, str) else None,
                decode_outbox(outbox) if isinstance(outbox, bytes) else [],
                {int(k): int(v) for k, v in json.loads(marks).items()} if isinstance(marks, str) else {},
            )
        raise FencedError(f"could not claim {entity}: its epoch kept moving")

    def release(self, partitions: Sequence[int]) -> None:
        for p in partitions:
            self.epochs.pop(p, None)

    def commit(
        self,
        state: Sequence[Write],
        offsets: Mapping[int, int],
        outbox: Mapping[int, Sequence[tuple[int, OutRecord]]],
        marks: Mapping[int, int],
    ) -> None:
        """Write ``state`` and each partition's next offset and outbox in one transaction, fenced on the
        epochs this process claimed; :class:`FencedError` when another process took a partition over."""
        rows: dict[str, dict[str, InValue]] = {
            self.entity(p): {
                "offset": str(off),
                "outbox": encode_outbox(outbox.get(p, ())),
                "marks": json.dumps({str(k): v for k, v in marks.items()}),
            }
            for p, off in offsets.items()
        }
        fences = [Fence(self.namespace, self.entity(p), "epoch", float(self.epochs[p])) for p in offsets]
        self.store.transact([*state, Write(self.namespace, rows, 0)], fences=fences)
        self.last_ms = time.time_ns() // 1_000_000
