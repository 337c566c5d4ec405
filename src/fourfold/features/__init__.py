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
]
