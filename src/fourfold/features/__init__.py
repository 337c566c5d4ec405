"""Features: defined once, computed identically offline and incrementally, served from an online store."""

from __future__ import annotations

from fourfold.features.definitions import (
    AGGREGATIONS,
    DefinitionError,
    Entity,
    EntityFeature,
    EventSource,
    FeatureSet,
    RequestFeature,
    Window,
    WindowedFeature,
)
from fourfold.features.incremental import IncrementalEngine, Late, Rejected, Scored
from fourfold.features.offline import PointInTime, compute_features, point_in_time_join
from fourfold.features.state import KeyState, StateError

__all__ = [
    "AGGREGATIONS",
    "DefinitionError",
    "Entity",
    "EntityFeature",
    "EventSource",
    "FeatureSet",
    "IncrementalEngine",
    "KeyState",
    "Late",
    "Rejected",
    "Scored",
    "StateError",
    "RequestFeature",
    "Window",
    "WindowedFeature",
    "PointInTime",
    "compute_features",
    "point_in_time_join",
]
