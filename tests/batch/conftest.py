"""Fixtures the batch tests share: a registered tiny XGBoost model, users to score, the test PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import postgres
from conftest import FEATURES, build
from fourfold import LocalRegistry, save_model

WriteUsers = Callable[..., pa.Table]


@pytest.fixture
def write_users() -> WriteUsers:
    """``write_users(path, n, seed=0, bad_every=0)``: ``n`` users (``user_id`` + the model's features) as
    one parquet file at ``path`` (parents created); every ``bad_every``-th ``x1`` is NaN."""

    def write(path: Path, n: int = 400, *, seed: int = 0, bad_every: int = 0) -> pa.Table:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, len(FEATURES)))
        if bad_every:
            x[::bad_every, 1] = np.nan
        ids = [f"u{seed:02d}-{i:05d}" for i in range(n)]
        t = pa.table({"user_id": ids, **{f: x[:, j] for j, f in enumerate(FEATURES)}})
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, path)
        return t

    return write


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
