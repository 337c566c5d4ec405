"""The stream's per-event rules, shared by every stream engine (the local processor and the Flink runner):
what makes an event malformed or invalid, the reason a late or refused event gets, and the step from
accepted events and their windows to decision records (the one assembly rule, ``Predictor.check``,
one ``Predictor.score``, the decision rule).

    >>> # scoring = Scoring(predictor, feature_set)
    >>> # event = decode(b'{"user_id": "u1", ...}', scoring.assembly)  # a dict, or a Refusal
    >>> # records, refusals = scoring.decide(events, keys, windowed_columns, {}, ids, now_ms)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fourfold.errors import InputError
from fourfold.features.assemble import Assembly
from fourfold.features.definitions import FeatureSet
from fourfold.features.incremental import IncrementalEngine, Late, Rejected
from fourfold.features.stores.base import OnlineStore
from fourfold.model.predictor import Predictor
from fourfold.stream.decisions import Decisions
from fourfold.stream.logs.base import OutRecord

__all__ = ["Refusal", "Scoring", "decode", "entity_features", "refusal"]

try:
    import orjson

    _loads: Any = orjson.loads
    _JSONError: Any = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - the stream extra brings orjson
    _loads = json.loads
    _JSONError = ValueError


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an event gets no decision: a dead-letter code (``malformed`` / ``invalid`` / ``late``), the
    reason, and the entity key where the event names one."""

    code: str
    reason: str
    key: str | None = None


def decode(value: bytes | str, assembly: Assembly) -> dict[str, Any] | Refusal:
    """One message's event: a JSON object without a field fourfold computes (an int entity key made a
    string), else why not. The key's validity is the incremental engine's to judge."""
    try:
        event = _loads(value)
    except _JSONError as exc:
        return Refusal("malformed", f"the event is not valid JSON: {exc}")
    if type(event) is not dict:
        return Refusal("malformed", f"an event must be a JSON object, got {type(event).__name__}")
    key_col = assembly.key
    if key_col is not None and type(event.get(key_col)) is int:
        event[key_col] = str(event[key_col])
    if not assembly.accepts(event):
        try:
            assembly.check_fields(event, where="the event", unknown=False)
        except InputError as exc:
            return Refusal("invalid", str(exc), event.get(key_col) if key_col else None)
    return event


def refusal(why: Late | Rejected, lateness: str, key: str | None, model_reason: str | None = None) -> Refusal:
    """The dead letter of an event the incremental engine refused (``lateness``: the feature set's);
    ``model_reason``: the model check's reason for the same event, which wins (the words every pattern
    gives) - :meth:`Scoring.refusal` finds it."""
    if type(why) is Late:
        return Refusal("late", f"the event is {why.lateness_ms} ms later than the allowed lateness "
                       f"({lateness}) behind its key's newest event", key)  # fmt: skip
    assert isinstance(why, Rejected)
    return Refusal("invalid", model_reason or why.reason, key)


def entity_features(
    store: OnlineStore, fs: FeatureSet, keys: Sequence[str | None]
) -> dict[str, dict[str, float]]:
    """The entity features of ``keys`` (one store read; a key without them gets the defaults)."""
    names = [f.name for f in fs.entity_features]
    defaults = {f.name: f.default for f in fs.entity_features}
    if not names:
        return {}
    unique = sorted({k for k in keys if k is not None and k})
    records = store.read(fs.entity_namespace, unique, names)
    out: dict[str, dict[str, float]] = {}
    for k, rec in zip(unique, records, strict=True):
        vals: dict[str, float] = {}
        for n in names:
            v = rec.values.get(n, defaults[n]) if rec is not None else defaults[n]
            vals[n] = float(v) if isinstance(v, int | float) else math.nan
        out[k] = vals
    return out


_MISSING: Any = object()


def _kept(items: list[Any], ok: list[bool]) -> list[Any]:
    return [x for x, keep in zip(items, ok, strict=True) if keep]


class Scoring:
    """Accepted events -> decision records, on the one path (see the module docstring)."""

    def __init__(
        self,
        predictor: Predictor,
        feature_set: FeatureSet | None,
        *,
        threshold: float | None = None,
        actions: tuple[str, str] = ("block", "allow"),
        id_field: str = "event_id",
        with_features: bool = True,
        timestamp_column: str | None = None,
        version: str | None = None,
        engine: IncrementalEngine | None = None,
    ) -> None:
        """``engine``: the incremental engine the events went through, made with ``request_fields=False``
        (the request fields are the model check's); the fields its windows read as numbers it has
        checked are finite."""
        self.predictor = predictor
        self.assembly = Assembly(predictor.signature.feature_names, feature_set)
        self.threshold = predictor.threshold if threshold is None else threshold
        self.binary = predictor.signature.task == "binary"
        self.actions = actions
        self.id_field = id_field
        self.ts_column = timestamp_column
        self.names = list(predictor.signature.feature_names)
        self.with_features = with_features
        self.decisions = Decisions(self.names if with_features else None)
        self.entity_names = [f.name for f in feature_set.entity_features] if feature_set else []
        self.entity_defaults = {f.name: f.default for f in feature_set.entity_features} if feature_set else {}
        # request fields the windows also read as numbers: the engine has checked they are finite (a float
        # column as is); the others are the model check's alone, screened per event for its reasons
        self.engine = engine
        numeric = engine.numeric_columns if engine is not None else frozenset()
        self._numeric_fields = {field for _, field in self.assembly.request if field in numeric}
        self.lateness = str(feature_set.allowed_lateness) if feature_set is not None else "none"
        pkg = predictor.package  # ``version``: the registry's, for a package loaded from its directory
        self.version = version or str(pkg.version or pkg.manifest.get("created_at", "unversioned"))

    def decide(
        self,
        events: list[dict[str, Any]],
        keys: list[Any],
        windowed: Mapping[str, list[float]],
        entity: Mapping[str, Mapping[str, float]],
        fallback_id: Callable[[int], Any],
        now_ms: int,
    ) -> tuple[list[OutRecord], list[tuple[int, str]]]:
        """Score the accepted ``events`` in one call: the decision records of the rows the model takes
        (in order), and ``(index, reason)`` of each row its check refused. ``fallback_id(i)`` is the id
        of ``events[i]`` when it has no ``id_field``."""
        if not events:
            return [], []
        # the model's columns, by the one assembly rule: request fields from the event, the rest computed
        columns: dict[str, Any] = {}
        screened: dict[int, str] = {}  # events whose request fields the model check refuses, and why
        for name, field in self.assembly.request:
            if field in self._numeric_fields:  # checked by the engine (a finite number): a float column
                columns[name] = np.asarray([event[field] for event in events], dtype=np.float64)
            else:
                columns[name] = self._screen(events, field, screened)
        for name in self.assembly.computed:
            if name in self.entity_defaults:
                default = float(self.entity_defaults[name])
                got = [entity.get(k or "", {}).get(name, default) for k in keys]
                columns[name] = np.asarray(got, dtype=np.float64)  # floats (NaN: not a number)
            else:
                columns[name] = np.asarray(windowed[name], dtype=np.float64)  # the engine's floats
        checked = self.predictor.check(columns)
        out = self.predictor.score(checked.x)
        scores = out.get("score", out.get("value"))
        labels = out.get("label")
        names = self.names if self.with_features else []
        ordered = [c.tolist() if isinstance(c := columns[name], np.ndarray) else c for name in names]
        refused: list[tuple[int, str]] = []
        index: list[int] | None = None
        if screened or (checked.ok is not None and not checked.ok.all()):  # rows the model's check refused
            ok = checked.ok.tolist() if checked.ok is not None else [True] * len(events)
            for i in screened:
                ok[i] = False
            refused = [(i, screened.get(i) or checked.reason(i) or "refused by the model's check")
                       for i, g in enumerate(ok) if not g]  # fmt: skip
            index = [i for i, g in enumerate(ok) if g]
            events, keys = _kept(events, ok), _kept(keys, ok)
            ordered = [_kept(c, ok) for c in ordered]
        n = len(events)  # the rows scored
        score_list = scores.tolist() if scores is not None else [math.nan] * n
        actions = self._actions(score_list, labels)
        id_field, ts_col = self.id_field, self.ts_column
        ids = [event.get(id_field) for event in events]
        if any(x is None for x in ids):
            where = range(n) if index is None else index
            ids = [fallback_id(i) if x is None else x for x, i in zip(ids, where, strict=True)]
        times = [event.get(ts_col) for event in events] if ts_col else [None] * n
        records = self.decisions.records(ids, score_list, actions, self.version, times, now_ms, keys, ordered)
        return records, refused

    def refusal(self, why: Late | Rejected, event: Mapping[str, Any], key: str | None) -> Refusal:
        """:func:`refusal` for ``event``: a refused value the model takes too gets the model check's
        reason; the key, the timestamp and lateness are the engine's alone."""
        own = None
        if (
            type(why) is Rejected
            and self.engine is not None
            and not self.engine.about_key_or_time(why.reason)
        ):
            own = self.model_reason(event)
        return refusal(why, self.lateness, key, own)

    def _screen(self, events: list[dict[str, Any]], field: str, refused: dict[int, str]) -> list[Any]:
        """The column of a request field only the model reads: numbers and nulls as they are; any other
        value (text, a list, a bool, the field missing) is put to the model check with the event's
        other request fields, and an event it refuses is noted in ``refused`` with the check's reason."""
        column: list[Any] = []
        append = column.append
        for i, event in enumerate(events):
            v = event.get(field, _MISSING)
            t = type(v)
            if t is float or t is int or v is None:
                append(v)
                continue
            why = refused.get(i) or self.model_reason(event)
            if why is None:
                append(v)  # a value the check takes (a bool for a bool feature)
            else:
                refused[i] = why
                append(None)
        return column

    def model_reason(self, event: Mapping[str, Any]) -> str | None:
        """The model check's reason for ``event``'s request fields (a missing field is missing), the
        computed features standing in as 0; None when it takes them."""
        row: dict[str, Any] = {name: event[field] for name, field in self.assembly.request if field in event}
        for name in self.assembly.computed:
            row[name] = 0.0
        checked = self.predictor.check([row])
        return None if checked.ok is None or checked.ok.all() else checked.reason(0) or None

    def _actions(self, score_list: list[float], labels: np.ndarray | None) -> list[str]:
        if self.binary:
            block, allow, threshold = *self.actions, self.threshold
            return [block if score > threshold else allow for score in score_list]
        n = len(score_list)
        return [str(labels[j].item() if labels is not None else score_list[j]) for j in range(n)]

    def decide_one(
        self,
        event: dict[str, Any],
        key: Any,
        windowed: Mapping[str, float],
        entity: Mapping[str, Mapping[str, float]],
        fallback_id: Callable[[int], Any],
        now_ms: int,
    ) -> tuple[OutRecord | None, str | None]:
        """:meth:`decide` for one event through the one-row fast path (``Predictor.check_one``, held to
        the same rules): its record, or the reason the model's check refused it - a refused row takes
        :meth:`decide`'s path, so the reason is the batch check's word for word."""
        row: dict[str, Any] = {}
        numeric = self._numeric_fields
        for name, field in self.assembly.request:
            v = event.get(field, _MISSING)
            if v is not _MISSING:  # a missing one: the check's reason, through decide
                row[name] = float(v) if field in numeric else v  # as decide's float column gives it
        for name in self.assembly.computed:
            if name in self.entity_defaults:
                default = float(self.entity_defaults[name])
                row[name] = float(entity.get(key or "", {}).get(name, default))
            else:
                row[name] = windowed[name]
        try:
            x = self.predictor.check_one(row)
        except InputError:
            columns = {name: [v] for name, v in windowed.items()}
            records, refused = self.decide([event], [key], columns, entity, fallback_id, now_ms)
            return (records[0] if records else None), (refused[0][1] if refused else None)
        out = self.predictor.score(x)
        scores = out.get("score", out.get("value"))
        score_list = scores.tolist() if scores is not None else [math.nan]
        actions = self._actions(score_list, out.get("label"))
        event_id = event.get(self.id_field)
        if event_id is None:
            event_id = fallback_id(0)
        ts = event.get(self.ts_column) if self.ts_column else None
        features = [[row[name]] for name in self.names] if self.with_features else []
        [record] = self.decisions.records(
            [event_id], score_list, actions, self.version, [ts], now_ms, [key], features
        )
        return record, None
