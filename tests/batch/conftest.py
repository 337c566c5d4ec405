"""Fixtures the batch tests share: a registered tiny XGBoost model and the test PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import postgres
from conftest import build
from fourfold import LocalRegistry, save_model


@pytest.fixture
def model_uri(tmp_path: Path) -> str:
    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "pkg", name="churn", sample=table)
    LocalRegistry().register(pkg, name="churn", aliases=["production"])
    return "models:/churn/production"


@pytest.fixture
def pg() -> Iterator[postgres.PG]:
    import adbc_driver_postgresql.dbapi as dbapi

    db = postgres.PG(dbapi.connect(postgres.url(), autocommit=True))
    try:
        yield db
    finally:
        db.drop_all()
