"""The Flink runner's per-key logic in plain Python (no PyFlink here): what the ``KeyedProcessFunction``
does with one event of one key, given the key's state blob from Flink's ``ValueState``.

It is the stream processor's path for one event (:mod:`fourfold.stream.scoring`): decode (malformed,
a computed field: ``invalid``) -> the incremental engine reads the windows and folds the event (a bad
key, time or value: ``invalid``; too late: ``late``) -> entity features -> ``Predictor.check`` ->
``Predictor.score`` -> the decision record; the key's new state goes back to Flink as a blob
(``IncrementalEngine.dump_key``, the format the online store holds).

Events are numbered per key (arrival order, the engine's ``renumber``): the same order as the local
processor's offsets, so the same windows; a restart from a Flink checkpoint numbers them the same way.

    >>> # k = KeyedScoring(spec); k.open()
    >>> # out = k.process('{"user_id": "u1", ...}', blob=None)  # out.decision, out.dead, out.state
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fourfold.features.definitions import FeatureSet, load_features_file
from fourfold.features.incremental import IncrementalEngine
from fourfold.model.package import load_package
from fourfold.model.predictor import Predictor
from fourfold.stream.dead_letters import dead_letter
from fourfold.stream.logs.base import Message
from fourfold.stream.scoring import Refusal, Scoring, decode, entity_features

__all__ = ["NO_KEY", "JobSpec", "KeyedScoring", "Outcome", "key_of"]

#: the Flink key of an event without a usable entity key: the keyed function refuses it with the reason
NO_KEY = ""

try:
    import orjson

    _loads: Any = orjson.loads
except ImportError:  # pragma: no cover - the stream extra brings orjson
    import json

    _loads = json.loads


@dataclass(frozen=True)
class JobSpec:
    """What a Flink worker needs to score events (picklable: shipped to every Python worker)."""

    package: str  # the resolved package's directory
    version: str  # its registry version (as the local processor writes it)
    key_column: str | None
    source: str  # the source's URL, for dead letters and ids
    source_name: str
    runtime: str = "auto"
    features: str | None = None  # a features.yaml instead of the package's
    threshold: float | None = None
    id_field: str = "event_id"
    with_features: bool = True
    store: str | None = None  # for entity features, when the feature set has any
    max_keys: int = 200_000


def key_of(line: str | bytes, key_column: str | None) -> str:
    """The Flink key of a raw event: its entity key as a string (an int made one, as :func:`decode`
    does), or :data:`NO_KEY` for a line that is not a JSON object with a usable key."""
    if key_column is None:
        return NO_KEY
    try:
        event = _loads(line)
    except ValueError:
        return NO_KEY
    if type(event) is not dict:
        return NO_KEY
    k = event.get(key_column)
    if type(k) is int:
        return str(k)
    return k if type(k) is str and k else NO_KEY


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event gave: a decision or a dead letter (JSON text), and the key's new state blob
    (None: unchanged)."""

    decision: str | None = None
    dead: str | None = None
    state: bytes | None = None


class KeyedScoring:
    """One Flink worker's scorer; :meth:`open` loads the model once (in the worker, not the client)."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self._held: dict[str, bytes] = {}  # keys whose state the engine holds -> the blob it matches

    def open(self) -> None:
        s = self.spec
        pkg = load_package(s.package)
        self.predictor = Predictor(pkg, runtime=s.runtime)  # type: ignore[arg-type]
        fs: FeatureSet | None
        if s.features is None:
            fs = pkg.features()
        else:
            fs = load_features_file(s.features, needs=pkg.signature.feature_names, model=pkg.label,
                                    label=f"--features {s.features}")  # fmt: skip
        self.fs = fs
        windowed = fs is not None and bool(fs.windowed)
        self.engine = (
            IncrementalEngine(fs, renumber=True, request_fields=False)
            if windowed and fs is not None
            else None
        )
        ts = self.engine.timestamp_column if self.engine is not None else None
        self.scoring = Scoring(self.predictor, fs, threshold=s.threshold, id_field=s.id_field,
                               with_features=s.with_features, timestamp_column=ts,
                               version=s.version, engine=self.engine)  # fmt: skip
        self.store = None
        if fs is not None and self.scoring.entity_names:
            from fourfold.features.stores import open_store
            from fourfold.settings import Settings

            self.store = open_store(s.store or Settings().store_url)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def _dead(self, line: str, r: Refusal) -> str:
        message = Message(-1, -1, None, line.encode())
        return dead_letter(message, r.code, r.reason, self.spec.source, r.key).value.decode()

    def _restore(self, key: str, blob: bytes | None) -> None:
        """Make the engine's state of ``key`` the one Flink holds (a blob it wrote itself is not read
        again; after a restore from a checkpoint the worker starts empty and reads every key's)."""
        engine = self.engine
        assert engine is not None
        held = self._held.get(key)
        if blob is None:
            if held is not None:
                engine.drop_key(key)
                del self._held[key]
        elif held is not blob and held != blob:
            engine.load_key(key, blob)
            self._held[key] = blob

    def process(self, line: str, blob: bytes | None) -> Outcome:
        """One event of one key (``blob``: the key's state in Flink, None for a key not seen yet)."""
        now_ms = time.time_ns() // 1_000_000
        event = decode(line, self.scoring.assembly)
        if type(event) is Refusal:
            return Outcome(dead=self._dead(line, event))
        assert type(event) is dict
        key_col = self.scoring.assembly.key
        engine = self.engine
        new_state: bytes | None = None
        windowed: dict[str, list[float]] = {}
        if engine is not None:
            got = event.get(key_col) if key_col else None
            key = got if type(got) is str else None
            if key:
                self._restore(key, blob)
            done = engine.process_many([event], [1])  # renumbered: the key's next arrival number
            if done.refused:
                why = self.scoring.refusal(done.refused[0][1], event, key)
                return Outcome(dead=self._dead(line, why))
            keys: list[Any] = done.keys
            windowed = done.columns
            new_state = engine.dump_key(keys[0])
            self._held.pop(keys[0], None)  # the most recent last: evicted after the others
            self._held[keys[0]] = new_state
            self._evict()
        else:
            keys = [event.get(key_col) if key_col else None]
        entity = entity_features(self.store, self.fs, keys) if self.store is not None and self.fs else {}
        one = {name: column[0] for name, column in windowed.items()}
        record, reason = self.scoring.decide_one(event, keys[0], one, entity, self._fallback_id, now_ms)
        if record is None:  # the model's check refused the row (its window is folded, as in the processor)
            key = keys[0] if type(keys[0]) is str else None
            why = Refusal("invalid", reason or "refused by the model's check", key)
            return Outcome(dead=self._dead(line, why), state=new_state)
        return Outcome(decision=record.value.decode(), state=new_state)

    def _fallback_id(self, i: int) -> str:
        """The id of an event without one: the source's name, the key and its arrival number there."""
        engine = self.engine
        if engine is None or not self._held:  # no windows: no arrival number either
            return f"{self.spec.source_name}/{time.time_ns()}"
        key = next(reversed(self._held))  # the key just processed
        st = engine.state(key)
        return f"{self.spec.source_name}/{key}/{max(st.seq) if st is not None else 0}"

    def _evict(self) -> None:
        over = len(self._held) - self.spec.max_keys
        if over > 0 and self.engine is not None:
            for k in list(self._held)[:over]:  # the oldest held; Flink's state has every key's
                self.engine.drop_key(k)
                del self._held[k]
