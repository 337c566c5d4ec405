"""A real fourfold server on a free port (uvicorn in a thread), with a small fraud model whose feature
set reads from a real store."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from fourfold import LocalRegistry, save_model
from fourfold.demo.data import generate_transactions
from fourfold.demo.features import FEATURES, FRAUD_FEATURES, featurize
from fourfold.demo.train import train_fraud_model
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import open_store
from fourfold.model.signature import Feature, Signature


@pytest.fixture(scope="session")
def fraud_log() -> pa.Table:
    return featurize(generate_transactions(20_000, seed=3))


@pytest.fixture(scope="session")
def fraud_package(tmp_path_factory: pytest.TempPathFactory, fraud_log: pa.Table) -> Path:
    result = train_fraud_model(fraud_log, n_estimators=20, max_depth=3)
    missing_ok = {f.name for f in FRAUD_FEATURES.windowed if f.agg in ("mean", "max", "last")}
    sig = Signature.for_task("binary", [Feature(f, nullable=f in missing_ok) for f in FEATURES])
    path = tmp_path_factory.mktemp("pkg") / "fraud"
    return save_model(result.model, path, name="fraud", signature=sig, sample=result.sample,
                      features=FRAUD_FEATURES).path  # fmt: skip


@pytest.fixture
def registered(fraud_package: Path) -> str:
    LocalRegistry().register(fraud_package, name="fraud", aliases=["production"])
    return "models:/fraud/production"


@pytest.fixture(scope="session")
def as_of(fraud_log: pa.Table) -> int:
    """The time the tests' servers read the stored windows as of: just after the last materialized event,
    so windows hold recent events and users differ (the log is from 2025: "now" would see empty windows)."""
    import pyarrow.compute as pc

    last = pc.max(fraud_log.slice(0, 15_000)["event_time"]).cast(pa.int64()).as_py()
    return int(last) + 1


@pytest.fixture
def store_url(tmp_path: Path, fraud_log: pa.Table) -> str:
    url = f"sqlite:///{tmp_path / 'features.db'}"
    store = open_store(url)
    OnlineFeatures(FRAUD_FEATURES, store).materialize(fraud_log.slice(0, 15_000))
    store.close()
    return url
