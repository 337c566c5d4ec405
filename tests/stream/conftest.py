"""Fixtures for the stream tests: the demo's fraud model as a package (features inside), and demo
transaction logs as JSON events in arrival order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import fourfold
from fourfold import save_model
from fourfold.demo.data import generate_transactions
from fourfold.demo.features import FEATURES, FRAUD_FEATURES, featurize
from fourfold.demo.train import train_fraud_model
from fourfold.model.signature import Feature, Signature


@pytest.fixture(scope="session")
def fraud_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A compiled fraud package (XGBoost, the demo's feature set, decision threshold 0.85)."""
    root = tmp_path_factory.mktemp("stream-model")
    log = generate_transactions(12_000, seed=11)
    result = train_fraud_model(featurize(log), n_estimators=30, max_depth=4)
    nullable = {f.name for f in FRAUD_FEATURES.windowed if math.isnan(f.empty_value)}
    sig = Signature.for_task("binary", [Feature(f, nullable=f in nullable) for f in FEATURES])
    pkg = save_model(result.model, root / "fraud", name="fraud", signature=sig, sample=result.sample,
                     features=FRAUD_FEATURES, threshold=0.85)  # fmt: skip
    fourfold.compile_model(pkg)
    return pkg.path
