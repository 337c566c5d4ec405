"""The stream processor: a poll batch of events in, decisions and dead letters out, on the one path.

Per poll batch (never per event on the I/O side):

1. decode each message (a JSON object, else a dead letter ``malformed``) and refuse an event that carries
   a field fourfold computes (:meth:`Assembly.check_fields`);
2. load the state of the batch's keys that this process does not hold yet - one store read;
3. per event, in log order, the incremental engine reads the windows and folds the event
   (``docs/features.md``; a bad key, timestamp or value is ``invalid``, a late event ``late``);
4. the entity features of the batch's keys - one store read;
5. :meth:`Predictor.check` on the assembled rows (a row the model refuses is ``invalid``) and one
   vectorized :meth:`Predictor.score`; the decision rule gives each event its action;
6. delivery: the records to the sink and the dead-letter log, sent at once (at-least-once) or inside
   one Kafka transaction (``exactly_once``);
7. a checkpoint, once ``commit_interval_ms`` has passed since the last one - by default 250 ms, or,
   when checkpoints are slow (many keys with long windows), three times the last one's duration, so
   that at most a quarter of the time goes to checkpoints, yet never more than 500 ms apart: the store
   that ``fourfold serve`` reads stays within a second of the stream (and when idle, on a revoke
   and at the end; with ``exactly_once`` after every batch): the sinks flushed, then one store
   transaction with the state of every key changed since (where ``fourfold serve`` reads it) and each
   partition's next offset and the sinks' marks (:mod:`fourfold.stream.checkpoints`), then the input
   offsets committed. With ``exactly_once`` the transaction holds the batch's records as the outbox and
   the Kafka transaction (records + offsets) commits after it.

At least once, a crash between checkpoints loses nothing: the next owner restores the last checkpoint,
cuts a file sink back to its mark and reads on from its offset, so each event is folded into its window
once and a record sent since is sent again with the same score, action and features (the output is
keyed by event id). A key changed in many batches between two checkpoints is written once.

Work whose checkpoint cannot be written (the store is down) is forgotten and read again from the last
checkpoint; a partition another process took over ends this process
(:class:`~fourfold.features.stores.FencedError`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fourfold.errors import UnavailableError
from fourfold.features.definitions import FeatureSet
from fourfold.features.incremental import IncrementalEngine
from fourfold.features.stores.base import FencedError, OnlineStore, StoreError, Write
from fourfold.model.predictor import Predictor
from fourfold.stream.checkpoints import Checkpoints, Restored
from fourfold.stream.dead_letters import dead_letter
from fourfold.stream.delivery import Delivery
from fourfold.stream.logs.base import Message, OutRecord, Sink, Source
from fourfold.stream.metrics import StreamMetrics
from fourfold.stream.scoring import Refusal, Scoring, decode, entity_features

__all__ = ["BatchReport", "StreamProcessor"]

log = logging.getLogger("fourfold.stream")
STATE_FIELD = "_state"  # the field OnlineFeatures reads a key's state from
_RETRIES = 5
# at least once: the state and offsets every quarter second (each key changed since written once; the
# online store a quarter second behind); a fifth more events/s than 100 ms on 2,000 keys, measured
DEFAULT_INTERVAL_MS = 250


@dataclass(frozen=True)
class BatchReport:
    polled: int
    decided: int
    dead: int


class StreamProcessor:
    """Scores one consumer's share of a log; see the module docstring. ``sinks[0]`` takes decisions,
    ``sinks[1]`` (optional) dead letters; without a dead-letter sink they are logged and counted."""

    def __init__(
        self,
        predictor: Predictor,
        feature_set: FeatureSet | None,
        source: Source,
        sinks: Sequence[Sink | None],
        store: OnlineStore,
        *,
        group: str,
        delivery: Delivery | None = None,
        threshold: float | None = None,
        actions: tuple[str, str] = ("block", "allow"),
        id_field: str = "event_id",
        with_features: bool = True,
        batch_size: int = 2000,
        max_wait_ms: int = 20,
        commit_interval_ms: int | None = None,
        max_keys: int = 200_000,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.predictor = predictor
        self.fs = feature_set
        self.source = source
        self.sinks = list(sinks)
        self.store = store
        self.delivery = delivery or Delivery(self.sinks, source)
        windowed = feature_set is not None and bool(feature_set.windowed)
        self.engine = (
            IncrementalEngine(feature_set, renumber=True, request_fields=False)
            if windowed and feature_set is not None
            else None
        )
        self.ts_column = self.engine.timestamp_column if self.engine else None
        # the per-event rules and the scoring step every stream engine shares
        self.scoring = Scoring(predictor, feature_set, threshold=threshold, actions=actions,
                               id_field=id_field, with_features=with_features,
                               timestamp_column=self.ts_column, engine=self.engine)  # fmt: skip
        self.assembly = self.scoring.assembly
        self.key_column = self.assembly.key
        self.threshold = self.scoring.threshold
        self.id_field = id_field
        self.batch_size, self.max_wait_s = batch_size, max_wait_ms / 1000
        self.max_keys = max_keys
        self.metrics = metrics or StreamMetrics(prometheus=False)
        self.namespace = feature_set.name if feature_set is not None else ""
        self.checkpoints = Checkpoints(store, group, source.name)
        self.version = self.scoring.version
        self._loaded: dict[str, int] = {}  # keys whose state the engine holds -> their partition
        self._redeliver: list[tuple[int, Restored]] = []
        # since the last checkpoint: the keys changed, per partition the first offset read and the next
        # offset, the records sent (to send again if a flush fails), the outbox (exactly-once)
        # a given interval is kept; the default (None) starts at 250 ms and spaces slow checkpoints out
        interval = DEFAULT_INTERVAL_MS if commit_interval_ms is None else commit_interval_ms
        self.commit_interval_s = 0.0 if self.delivery.per_batch else interval / 1000
        self._spacing = self.commit_interval_s  # grows with a slow checkpoint, up to _max_spacing
        adaptive = commit_interval_ms is None and not self.delivery.per_batch
        self._max_spacing = max(self.commit_interval_s, 0.5) if adaptive else self.commit_interval_s
        self.max_pending = max(20 * batch_size, 10_000)
        self._dirty: dict[str, int] = {}
        self._since: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._sent: list[list[OutRecord]] = [[] for _ in self.sinks]
        self._outbox: dict[int, list[tuple[int, OutRecord]]] = {}
        self._pending = 0
        self._checkpointed = time.monotonic()
        self._marks = self._sink_marks()
        self.owned: set[int] = set()
        self.last_loop = time.monotonic()
        self.metrics.checkpoint_ms = lambda: self.checkpoints.last_ms
        self.metrics.partitions = lambda: len(self.owned)

    # -- partitions gained and lost (called by the source from inside poll) ------------------------------
    def assigned(self, partitions: Sequence[int]) -> dict[int, int | None]:
        committed = self.source.committed(partitions)
        starts: dict[int, int | None] = {}
        for p in partitions:
            restored = self.checkpoints.claim(p)
            starts[p] = restored.offset
            self.owned.add(p)
            got = committed.get(p)
            if restored.offset is not None and (got is None or got < restored.offset or restored.marks):
                self._redeliver.append((p, restored))
            log.info("partition %s of %s: from offset %s (epoch %s)", p, self.source.url, restored.offset,
                     restored.epoch)  # fmt: skip
        return starts

    def revoked(self, partitions: Sequence[int]) -> None:
        gone = set(partitions)
        if self._pending:  # checkpointed before another owner restores it (else read again from the last)
            self.checkpoint(keep=set(self.owned) - gone)
        if self.engine is not None:
            for key in [k for k, p in self._loaded.items() if p in gone]:
                self.engine.drop_key(key)
                del self._loaded[key]
        self.owned -= gone
        self.checkpoints.release(partitions)
        log.info("partitions %s of %s revoked (checkpointed); owned now: %s", sorted(gone), self.source.url,
                 sorted(self.owned) or "none")  # fmt: skip
        self._redeliver = [(p, r) for p, r in self._redeliver if p not in gone]

    def start(self) -> None:
        self.source.start(self)

    # -- the loop -------------------------------------------------------------------------------------------
    def step(self) -> BatchReport:
        """Poll once and process what came (at most ``batch_size`` events)."""
        self.last_loop = time.monotonic()
        messages = self.source.poll(self.batch_size, self.max_wait_s)
        if self._redeliver:
            self._redeliver_outboxes()
        if not messages:
            self.checkpoint()  # idle: what was read is checkpointed now
            return BatchReport(0, 0, 0)
        return self.process(messages)

    def _redeliver_outboxes(self) -> None:
        self.checkpoint()
        pending, self._redeliver = self._redeliver, []
        for p, restored in pending:
            for i, mark in restored.marks.items():
                sink = self.sinks[i] if i < len(self.sinks) else None
                if sink is not None and sink.mark() is not None:
                    sink.rewind(mark)
                    self._marks[i] = mark
            records: list[list[OutRecord]] = [[] for _ in self.sinks]
            for i, r in restored.outbox:
                if i < len(records):
                    records[i].append(r)
            assert restored.offset is not None
            self._deliver(records, {p: restored.offset})
            if restored.outbox:
                log.info("partition %s: delivered the last checkpoint's %d records again", p,
                         len(restored.outbox))  # fmt: skip

    def _deliver(self, records: Sequence[Sequence[OutRecord]], offsets: Mapping[int, int]) -> None:
        """Deliver ``records`` now and commit ``offsets``."""
        self.delivery.send(records)
        self._retrying(self.delivery.before_checkpoint, records)
        self._retrying(lambda: self.delivery.after_checkpoint(offsets), records)

    def _retrying(self, step: Any, records: Sequence[Sequence[OutRecord]]) -> None:
        """``step()``, tried again after a log failure with ``records`` sent once more first (the
        copies are identical; a failed transaction took its records with it)."""
        for attempt in range(_RETRIES):
            try:
                if attempt:
                    self.delivery.send(records)
                step()
                return
            except UnavailableError as exc:
                if attempt == _RETRIES - 1:
                    raise
                log.warning("delivery failed (%s); trying again", exc)
                time.sleep(0.2 * 2**attempt)

    def _sink_marks(self) -> dict[int, int]:
        """Where each rewindable sink (a file) stands."""
        return {i: at for i, s in enumerate(self.sinks) if s is not None and (at := s.mark()) is not None}

    def process(self, messages: Sequence[Message]) -> BatchReport:
        t0 = time.perf_counter()
        now_ms = time.time_ns() // 1_000_000
        source = self.source.url
        dlq: list[tuple[int, int, OutRecord]] = []
        dead_codes: list[str] = []

        def dead(m: Message, code: str, reason: str, key: str | None = None) -> None:
            dlq.append((m.partition, m.offset, dead_letter(m, code, reason, source, key)))
            dead_codes.append(code)

        good, events = self._decode(messages, dead)
        key_col = self.key_column
        engine = self.engine
        keys: list[Any]
        windowed: dict[str, list[float]] = {}
        if engine is not None:
            done = engine.process_many(events, [m.offset + 1 for m in good])
            for i, why in done.refused:
                r = self.scoring.refusal(why, events[i], events[i].get(key_col) if key_col else None)
                dead(good[i], r.code, r.reason, r.key)
            if done.refused:
                good, events = [good[i] for i in done.index], [events[i] for i in done.index]
            keys, windowed = done.keys, done.columns
            changed = {str(k): m.partition for k, m in zip(keys, good, strict=True)}
            self._loaded.update(changed)
            self._dirty.update(changed)
        else:
            keys = [e.get(key_col) for e in events] if key_col else [None] * len(events)

        records, decided_msgs = self._decide(good, events, keys, windowed, dead, now_ms)
        dlq.sort(key=lambda d: (d[0], d[1]))  # in log order, whichever step refused the event
        dead_records = [d[2] for d in dlq]
        first = {m.partition: m.offset for m in reversed(messages)}  # each partition's first message
        for p, offset in first.items():
            self._since.setdefault(p, offset)
        self._ends.update({m.partition: m.offset + 1 if m.end is None else m.end for m in messages})
        if self.delivery.outbox:
            outbox = self._outbox
            for m, rec in zip(decided_msgs, records, strict=True):
                outbox.setdefault(m.partition, []).append((0, rec))
            for p, _, rec in dlq:
                outbox.setdefault(p, []).append((1, rec))
        both = [records, dead_records]
        for sent, recs in zip(self._sent, both, strict=False):
            sent.extend(recs)
        self._pending += len(messages)
        self.delivery.send(both[: len(self.sinks)])
        seconds = time.perf_counter() - t0
        done_ms = time.time_ns() // 1_000_000
        latencies = (  # only where the histogram is exported: a list per batch costs on the hot path
            [(done_ms - t) / 1000 for msg in decided_msgs if (t := msg.log_time_ms) is not None]
            if self.metrics.registry is not None
            else []
        )
        self.metrics.batch(len(records), dead_codes, seconds, latencies)
        if dlq and (len(self.sinks) < 2 or self.sinks[1] is None):  # no dead-letter log: say it here
            for rec in dead_records[:5]:
                log.warning("dead letter: %s", rec.value[:500].decode("utf-8", "replace"))
        if time.monotonic() - self._checkpointed >= self._spacing or self._pending >= self.max_pending:
            self.checkpoint()
        return BatchReport(len(messages), len(records), len(dlq))

    def _decode(self, messages: Sequence[Message], dead: Any) -> tuple[list[Message], list[dict[str, Any]]]:
        """The messages that hold an event (a JSON object without a field fourfold computes) and their
        events; the others are dead letters. Notes the keys whose state must be loaded."""
        key_col, loaded, assembly = self.key_column, self._loaded, self.assembly
        need: dict[str, int] = {}
        good: list[Message] = []
        events: list[dict[str, Any]] = []
        for m in messages:
            event = decode(m.value, assembly)
            if type(event) is Refusal:
                dead(m, event.code, event.reason, event.key)
                continue
            assert type(event) is dict
            if key_col is not None:
                k = event.get(key_col)
                if type(k) is str and k and k not in loaded:
                    need[k] = m.partition
            good.append(m)
            events.append(event)
        self._load_states(need)
        return good, events

    def _decide(
        self,
        msgs: list[Message],
        events: list[dict[str, Any]],
        keys: list[Any],
        windowed: Mapping[str, list[float]],
        dead: Any,
        now_ms: int,
    ) -> tuple[list[OutRecord], list[Message]]:
        """Score the accepted events in one call; their decision records, and the messages they decide."""
        if not events:
            return [], []
        entity = self._entity_features(keys) if self.scoring.entity_names else {}
        name = self.source.name

        def fallback_id(i: int) -> str:
            return f"{name}/{msgs[i].partition}/{msgs[i].offset}"

        records, refused = self.scoring.decide(events, keys, windowed, entity, fallback_id, now_ms)
        if refused:  # rows the model's check refused
            for i, reason in refused:
                dead(msgs[i], "invalid", reason, keys[i] if type(keys[i]) is str else None)
            gone = {i for i, _ in refused}
            msgs = [m for i, m in enumerate(msgs) if i not in gone]
        return records, msgs

    def _entity_features(self, keys: list[str | None]) -> dict[str, dict[str, float]]:
        if self.fs is None:
            return {}
        return entity_features(self.store, self.fs, keys)

    def _load_states(self, need: Mapping[str, int]) -> None:
        if self.engine is None or not need:
            return
        keys = list(need)
        records = self.store.read(self.namespace, keys, [STATE_FIELD])
        for k, rec in zip(keys, records, strict=True):
            blob = rec.values.get(STATE_FIELD) if rec is not None else None
            if isinstance(blob, bytes):
                self.engine.load_key(k, blob)
            self._loaded[k] = need[k]

    def _state_writes(self, changed: Mapping[str, int]) -> list[Write]:
        if self.engine is None or not changed:
            return []
        rows: dict[str, dict[str, Any]] = {}
        times: dict[str, int] = {}
        for k in changed:
            st = self.engine.state(k)
            if st is None:
                continue
            rows[k] = {STATE_FIELD: self.engine.dump_key(k)}
            times[k] = st.max_ts
        return [Write(self.namespace, rows, times)]

    def checkpoint(self, *, keep: set[int] | None = None) -> bool:
        """Checkpoint what was read since the last checkpoint (see the module docstring); False when the
        store could not take it and the work was rolled back to be read again (``keep``: the partitions
        to read again - a revoke gives up the others)."""
        if not self._pending:
            return True
        started = time.monotonic()
        self._retrying(self.delivery.before_checkpoint, self._sent)
        state = self._state_writes(self._dirty)
        marks = self._sink_marks()
        try:
            self.checkpoints.commit(state, self._ends, self._outbox, marks)
        except FencedError:
            raise
        except StoreError as exc:
            log.warning("the checkpoint could not be written (%s); the work since the last one will be "
                        "read again", exc)  # fmt: skip
            self._rollback(keep)
            time.sleep(0.5)
            return False
        self._marks = marks
        ends = self._ends
        self._retrying(lambda: self.delivery.after_checkpoint(ends), self._sent)
        self._clear()
        self._evict()
        took = time.monotonic() - started
        self._spacing = min(self._max_spacing, max(self.commit_interval_s, 3 * took))
        return True

    @property
    def settled(self) -> bool:
        """Everything read is checkpointed and delivered."""
        return not self._pending and not self._redeliver

    def _clear(self) -> None:
        self._dirty, self._since, self._ends, self._outbox = {}, {}, {}, {}
        self._sent = [[] for _ in self.sinks]
        self._pending = 0
        self._checkpointed = time.monotonic()

    def _rollback(self, keep: set[int] | None) -> None:
        """Forget the work since the last checkpoint: the keys' state is read from the store again, the
        partitions are read again from where that work began, a file sink is cut back to its mark."""
        self.delivery.abandon()
        self._forget(set(self._dirty))
        since = {p: o for p, o in self._since.items() if keep is None or p in keep}
        for i, mark in self._marks.items():
            sink = self.sinks[i]
            if sink is not None:
                sink.rewind(mark)
        self._clear()
        if since:
            self.source.seek(since)

    def _forget(self, keys: set[str]) -> None:
        for k in keys:
            if self.engine is not None:
                self.engine.drop_key(k)
            self._loaded.pop(k, None)

    def _evict(self) -> None:
        over = len(self._loaded) - self.max_keys
        if over > 0 and self.engine is not None:
            for k in list(self._loaded)[:over]:  # the oldest loaded; the store holds their state
                self.engine.drop_key(k)
                del self._loaded[k]

    def healthy(self, stale_s: float = 30.0) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_loop
        if idle > stale_s:
            return False, f"the stream loop has not polled for {idle:.0f} s"
        return True, f"ok: {len(self.owned)} partitions"
