"""The model a server is serving right now, and how it moves to a new version without a failed request.

``ModelHolder.current`` is swapped in one assignment after the new version is loaded and warmed; a request
reads it once and uses that version to the end, so its response names the version that scored it.

    >>> # holder = ModelHolder(settings); holder.load(); holder.current.version
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fourfold.features.assemble import Assembly
from fourfold.features.definitions import FeatureSet, load_features_file
from fourfold.features.online import OnlineFeatures
from fourfold.model.package import ModelPackage
from fourfold.model.predictor import Predictor
from fourfold.online.batcher import MicroBatcher
from fourfold.online.settings import ServeSettings
from fourfold.registry.resolve import resolve

__all__ = ["ModelHolder", "Served"]

log = logging.getLogger("fourfold.online")


@dataclass(frozen=True)
class Served:
    predictor: Predictor
    version: str
    batcher: MicroBatcher
    features: FeatureSet | None
    online: OnlineFeatures | None  # the store side, when fourfold computes any of the model's features
    assembly: Assembly  # which fields the caller sends, which fourfold computes
    decision: bool = False  # the package set a threshold: responses carry the decision it implies

    @property
    def name(self) -> str:
        return self.predictor.name


class ModelHolder:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.current: Served | None = None

    def load(self) -> bool:
        """Load the version the URI names now; returns True when it changed what is served."""
        pkg = resolve(self.settings.model)
        version = pkg.version or pkg.manifest.get("created_at", "0")
        if self.current is not None and self.current.version == version:
            return False
        s = self.settings
        predictor = Predictor(pkg, runtime=s.runtime, threads=s.threads)
        _warm(predictor)
        fs = self._feature_set(pkg)
        assembly = Assembly(pkg.signature.feature_names, fs, windowed="computed", entity="computed")
        online = OnlineFeatures(fs) if fs is not None and assembly.computes else None
        batcher = MicroBatcher(
            predictor.score, max_batch_size=s.max_batch_size, max_batch_wait_ms=s.max_batch_wait_ms
        )
        old = self.current
        decision = bool(pkg.manifest.get("decision")) and pkg.signature.task == "binary"
        self.current = Served(predictor, str(version), batcher, fs, online, assembly, decision)
        if old is not None:
            log.info("model swapped: %s v%s -> v%s", predictor.name, old.version, version)
        return True

    def _feature_set(self, pkg: ModelPackage) -> FeatureSet | None:
        """``settings.features`` when given (it must define every feature the model takes), else the
        feature set stored in the package."""
        path = self.settings.features
        if path is None:
            return pkg.features()
        return load_features_file(path, needs=pkg.signature.feature_names, model=pkg.label)


def _warm(predictor: Predictor) -> None:
    """Score the stored sample (or zeros) so the first request pays no lazy initialisation."""
    sample = predictor.package.sample()
    try:
        x = predictor.check(sample).x if sample is not None else None
    except Exception:
        x = None
    if x is None or not len(x):
        x = np.zeros((1, len(predictor.signature.inputs)), dtype=predictor.input_dtype)
    for rows in (x[:1], x[:64]):
        predictor.score(np.ascontiguousarray(rows))
