"""Delivery around a checkpoint, at least once: records go out at once, become durable before a
checkpoint covers them, and the input offsets are committed after it. ``fourfold.stream.job`` adds the
exactly-once variant (a Kafka transaction per batch); the processor knows only this contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fourfold.stream.logs.base import OutRecord, Sink, Source

__all__ = ["Delivery"]


class Delivery:
    """Delivers records and commits input offsets around a checkpoint: ``send`` queues a batch's records
    at once, ``before_checkpoint`` makes every record sent so far durable (the checkpoint then covers
    them), ``after_checkpoint`` commits the input offsets. At-least-once; a subclass makes each batch
    one Kafka transaction."""

    #: whether the checkpoint keeps the records (the outbox) to deliver them again after a crash
    outbox = False
    #: whether every batch must be checkpointed (a transaction per batch)
    per_batch = False

    def __init__(self, sinks: Sequence[Sink | None], source: Source) -> None:
        self.sinks, self.source = sinks, source

    def send(self, records: Sequence[Sequence[OutRecord]]) -> None:
        for sink, recs in zip(self.sinks, records, strict=True):
            if sink is not None and recs:
                sink.send(recs)

    def before_checkpoint(self) -> None:
        for sink in self.sinks:
            if sink is not None:
                sink.flush()

    def after_checkpoint(self, offsets: Mapping[int, int]) -> None:
        self.source.commit(offsets)

    def abandon(self) -> None:
        """Work since the last checkpoint is being given up (it is read again, or by the next owner)."""
