"""Feature definitions: written once, read by every engine and pattern.

A :class:`FeatureSet` binds, in the model signature's order, three kinds of feature:

* :class:`WindowedFeature` - an aggregation over an entity's earlier events in a time window
  (``count``, ``sum``, ``mean``, ``min``, ``max``, ``count_distinct``, ``last``);
* :class:`RequestFeature` - a field of the incoming event itself;
* :class:`EntityFeature` - a precomputed value per entity (a nightly embedding, a risk tier).

Point-in-time rule (the only one fourfold uses): for an event ``e`` with key ``k`` at time ``t``, a
windowed feature over ``W`` aggregates the events ``x`` with the same key and ``t - W <= x.ts < t``: the
event itself, any event with the same timestamp and anything later are excluded. An event arriving more
than ``allowed_lateness`` behind the newest timestamp seen for its key is late: it is not folded into
state and gets no features.

    >>> fs = FeatureSet.from_dict({
    ...     "name": "fraud",
    ...     "entities": [{"name": "user", "join_key": "user_id"}],
    ...     "sources": [{"name": "tx", "entity": "user", "timestamp": "event_time"}],
    ...     "features": [
    ...         {"name": "amount", "request": "amount"},
    ...         {"name": "txn_count_10m", "source": "tx", "agg": "count", "window": "10m"},
    ...     ],
    ... })
    >>> fs.names, fs.windowed[0].window.ms
    (('amount', 'txn_count_10m'), 600000)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fourfold.errors import FourfoldError, NotFoundError, RequestError, UnavailableError

__all__ = [
    "AGGREGATIONS",
    "DefinitionError",
    "Entity",
    "EntityFeature",
    "EventSource",
    "FeatureSet",
    "RequestFeature",
    "Window",
    "WindowedFeature",
    "entity_namespace",
    "load_features_file",
]

AGGREGATIONS: tuple[str, ...] = ("count", "sum", "mean", "min", "max", "count_distinct", "last")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: what the online side does for an entity the store knows nothing of: score it on its empty history and
#: the entity features' defaults (and say so: ``"entity_found": false``), or refuse it (404)
UNKNOWN_ENTITY: tuple[str, ...] = ("defaults", "reject")


class DefinitionError(FourfoldError):
    """A feature definition that is invalid or refers to something undefined."""

    status = 422


@dataclass(frozen=True, slots=True)
class Window:
    """A duration in milliseconds, written like ``10m``, ``1h``, ``7d``, ``30s`` or ``250ms``."""

    ms: int

    def __post_init__(self) -> None:
        if self.ms < 0:
            raise DefinitionError(f"a duration must not be negative, got {self.ms} ms")

    @classmethod
    def parse(cls, text: str | int | Window) -> Window:
        if isinstance(text, Window):
            return text
        if isinstance(text, int) and not isinstance(text, bool):
            return cls(text)
        m = _DURATION.fullmatch(str(text).strip())
        if not m:
            raise DefinitionError(f"cannot read duration {text!r}: write e.g. 250ms, 30s, 10m, 1h or 7d")
        return cls(int(m.group(1)) * _UNITS[m.group(2)])

    def __str__(self) -> str:
        for unit in ("d", "h", "m", "s"):
            if self.ms and self.ms % _UNITS[unit] == 0:
                return f"{self.ms // _UNITS[unit]}{unit}"
        return f"{self.ms}ms"


def load_features_file(
    path: str | Path, *, needs: Sequence[str] = (), model: str = "the model", label: str | None = None
) -> FeatureSet:
    """A features.yaml a user points a pattern at instead of the package's (``fourfold serve --features``,
    ``fourfold batch --features``): a missing file is a 404, one that cannot be read a 400 naming it, and
    one that does not define every feature the model takes (``needs``) a 400 naming those.

        >>> # fs = load_features_file("wide.yaml", needs=pkg.signature.feature_names, model=pkg.label)
    """
    what = label or f"features file {path}"
    if not Path(path).is_file():
        raise NotFoundError(f"features file {path} does not exist" + (f" ({label})" if label else ""))
    try:
        fs = FeatureSet.load(path)
    except (OSError, DefinitionError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise RequestError(f"{what}: {exc}") from None
    missing = [n for n in needs if n not in fs.names]
    if missing:
        raise RequestError(f"{what} does not define {', '.join(map(repr, missing))}, which {model} takes")
    return fs


def entity_namespace(name: str) -> str:
    """The store namespace of feature set (or model) ``name``'s entity features."""
    return f"{name}__entities"


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DefinitionError(
            f"invalid {kind} name {name!r}: use letters, digits and '_', not starting with a digit"
        )


@dataclass(frozen=True, slots=True)
class Entity:
    """What features are keyed by, e.g. ``Entity("user", "user_id")``."""

    name: str
    join_key: str

    def __post_init__(self) -> None:
        _check_name("entity", self.name)
        _check_name("join key", self.join_key)


@dataclass(frozen=True, slots=True)
class EventSource:
    """A log of events for one entity, ordered by arrival, with an event-time column."""

    name: str
    entity: str
    timestamp: str = "event_time"

    def __post_init__(self) -> None:
        _check_name("source", self.name)


@dataclass(frozen=True, slots=True)
class WindowedFeature:
    """``agg`` of ``column`` over the entity's events in the ``window`` before each event."""

    name: str
    source: str
    agg: str
    window: Window
    column: str | None = None
    default: float = math.nan
    hop: Window | None = None

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        if self.agg not in AGGREGATIONS:
            raise DefinitionError(
                f"feature {self.name!r}: unknown aggregation {self.agg!r}; "
                f"use one of {', '.join(AGGREGATIONS)}"
            )
        if self.agg != "count" and not self.column:
            raise DefinitionError(f"feature {self.name!r}: aggregation {self.agg!r} needs a column")
        if self.window.ms <= 0:
            raise DefinitionError(f"feature {self.name!r}: the window must be longer than 0")
        if self.hop is not None and not 0 < self.hop.ms <= self.window.ms:
            raise DefinitionError(f"feature {self.name!r}: the tile hop must be > 0 and at most the window")

    def start(self, t: int) -> int:
        """The first timestamp in the window of an event at ``t``: ``t - W``, or with tiles (a sawtooth
        window, as Chronon's) ``t - W`` rounded down to the hop, so the tail moves a hop at a time."""
        if self.hop is None:
            return t - self.window.ms
        return ((t - self.window.ms) // self.hop.ms) * self.hop.ms

    @property
    def reach(self) -> int:
        """How far back, at most, the window of an event reaches: ``W`` (+ ``hop - 1`` with tiles)."""
        return self.window.ms + (self.hop.ms - 1 if self.hop else 0)

    @property
    def empty_value(self) -> float:
        """The value over a window with no events: 0 for counts and sums, NaN (missing) otherwise."""
        return 0.0 if self.agg in ("count", "sum", "count_distinct") else math.nan


@dataclass(frozen=True, slots=True)
class RequestFeature:
    """A field of the event or request itself (``field`` defaults to the feature's name)."""

    name: str
    field: str = ""
    default: float = math.nan

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        if not self.field:
            object.__setattr__(self, "field", self.name)


@dataclass(frozen=True, slots=True)
class EntityFeature:
    """A precomputed value per entity, written to the online store by a batch job."""

    name: str
    entity: str
    default: float = math.nan

    def __post_init__(self) -> None:
        _check_name("feature", self.name)


Feature = WindowedFeature | RequestFeature | EntityFeature


@dataclass(frozen=True)
class FeatureSet:
    """The features a model needs, in its signature's order, and what they are computed from."""

    name: str
    entities: tuple[Entity, ...]
    sources: tuple[EventSource, ...]
    features: tuple[Feature, ...]
    allowed_lateness: Window = field(default_factory=lambda: Window(0))
    defaults_acceptable: bool = True
    unknown_entity: str = "defaults"  # or "reject": an entity the store knows nothing of is a 404

    def __post_init__(self) -> None:
        _check_name("feature set", self.name)
        if self.unknown_entity not in UNKNOWN_ENTITY:
            raise DefinitionError(
                f"unknown_entity must be one of {', '.join(UNKNOWN_ENTITY)}, got {self.unknown_entity!r}"
            )
        entities = {e.name for e in self.entities}
        sources = {s.name: s for s in self.sources}
        for s in self.sources:
            if s.entity not in entities:
                raise DefinitionError(f"source {s.name!r} refers to unknown entity {s.entity!r}")
        seen: set[str] = set()
        for f in self.features:
            if f.name in seen:
                raise DefinitionError(f"feature {f.name!r} is defined twice in feature set {self.name!r}")
            seen.add(f.name)
            if isinstance(f, WindowedFeature) and f.source not in sources:
                raise DefinitionError(
                    f"feature {f.name!r} refers to unknown source {f.source!r}; "
                    f"known: {', '.join(sources) or 'none'}"
                )
            if isinstance(f, EntityFeature) and f.entity not in entities:
                raise DefinitionError(f"feature {f.name!r} refers to unknown entity {f.entity!r}")

    # -- views ---------------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def windowed(self) -> tuple[WindowedFeature, ...]:
        return tuple(f for f in self.features if isinstance(f, WindowedFeature))

    @property
    def request(self) -> tuple[RequestFeature, ...]:
        return tuple(f for f in self.features if isinstance(f, RequestFeature))

    @property
    def entity_features(self) -> tuple[EntityFeature, ...]:
        return tuple(f for f in self.features if isinstance(f, EntityFeature))

    @property
    def max_window(self) -> Window:
        """The longest look-back of any windowed feature (tiles included): state keeps this plus lateness."""
        return Window(max((f.reach for f in self.windowed), default=0))

    @property
    def defaults(self) -> dict[str, float]:
        """The value of each feature when it is unavailable (store down, unknown entity): the declared
        ``default``, else for a windowed feature its empty-window value (0 for counts and sums)."""
        return {
            f.name: f.empty_value if isinstance(f, WindowedFeature) and math.isnan(f.default) else f.default
            for f in self.features
        }

    @property
    def entity_namespace(self) -> str:
        """The online store namespace of the entity features (``<name>__entities``): where batch jobs
        write them (``fourfold batch ... -o redis://``) and the online side reads them."""
        return entity_namespace(self.name)

    def fallback(self, names: Sequence[str], reason: str) -> dict[str, float]:
        """The values of ``names`` when the store cannot be read (``reason``: why): the :attr:`defaults`,
        or :class:`~fourfold.errors.UnavailableError` (503) when the set declares defaults unacceptable
        (``defaults_acceptable: false``) - one rule for every pattern that reads the store."""
        if not self.defaults_acceptable:
            raise UnavailableError(
                f"the feature store is unavailable ({reason}) and the features of {self.name!r} have no "
                "acceptable defaults"
            )
        defaults = self.defaults
        return {n: defaults[n] for n in names}

    def source(self, name: str) -> EventSource:
        return next(s for s in self.sources if s.name == name)

    def entity(self, name: str) -> Entity:
        return next(e for e in self.entities if e.name == name)

    def key_of(self, feature: WindowedFeature) -> str:
        """The join key column of the entity a windowed feature's source is keyed by."""
        return self.entity(self.source(feature.source).entity).join_key

    def select(self, names: list[str] | tuple[str, ...]) -> FeatureSet:
        """The same definitions with only ``names``, in that order (e.g. a model signature's order)."""
        by_name = {f.name: f for f in self.features}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DefinitionError(
                f"feature set {self.name!r} does not define {', '.join(repr(m) for m in missing)}; "
                f"it defines: {', '.join(self.names)}"
            )
        return FeatureSet(
            self.name, self.entities, self.sources, tuple(by_name[n] for n in names),
            self.allowed_lateness, self.defaults_acceptable, self.unknown_entity,
        )  # fmt: skip

    # -- (de)serialization ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        feats: list[dict[str, Any]] = []
        for f in self.features:
            d: dict[str, Any] = {"name": f.name}
            if isinstance(f, WindowedFeature):
                d |= {"source": f.source, "agg": f.agg, "window": str(f.window)}
                if f.hop is not None:
                    d["hop"] = str(f.hop)
                if f.column:
                    d["column"] = f.column
            elif isinstance(f, RequestFeature):
                d["request"] = f.field
            else:
                d["entity"] = f.entity
            if not math.isnan(f.default):
                d["default"] = f.default
            feats.append(d)
        return {
            "name": self.name,
            "entities": [{"name": e.name, "join_key": e.join_key} for e in self.entities],
            "sources": [{"name": s.name, "entity": s.entity, "timestamp": s.timestamp} for s in self.sources],
            "allowed_lateness": str(self.allowed_lateness) if self.allowed_lateness.ms else "0ms",
            "defaults_acceptable": self.defaults_acceptable,
            **({"unknown_entity": self.unknown_entity} if self.unknown_entity != "defaults" else {}),
            "features": feats,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSet:
        try:
            features: list[Feature] = []
            for d in data["features"]:
                default = float(d.get("default", math.nan))
                if "request" in d:
                    features.append(RequestFeature(d["name"], d["request"] or d["name"], default))
                elif "source" in d:
                    features.append(
                        WindowedFeature(
                            d["name"],
                            d["source"],
                            d["agg"],
                            Window.parse(d["window"]),
                            d.get("column"),
                            default,
                            Window.parse(d["hop"]) if d.get("hop") else None,
                        )
                    )
                elif "entity" in d:
                    features.append(EntityFeature(d["name"], d["entity"], default))
                else:
                    raise DefinitionError(
                        f"feature {d.get('name')!r} needs one of 'source' (windowed), 'request' or 'entity'"
                    )
            return cls(
                name=data["name"],
                entities=tuple(Entity(e["name"], e["join_key"]) for e in data.get("entities", ())),
                sources=tuple(
                    EventSource(s["name"], s["entity"], s.get("timestamp", "event_time"))
                    for s in data.get("sources", ())
                ),
                features=tuple(features),
                allowed_lateness=Window.parse(data.get("allowed_lateness", 0)),
                defaults_acceptable=bool(data.get("defaults_acceptable", True)),
                unknown_entity=str(data.get("unknown_entity", "defaults")),
            )
        except KeyError as exc:
            raise DefinitionError(f"feature definition is missing the field {exc.args[0]!r}") from None

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        """Read a feature set from a YAML file (e.g. ``features.yaml`` next to the model)."""
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, Mapping):
            raise DefinitionError(f"{path} does not hold a feature set mapping")
        return cls.from_dict(data)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
