from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fourfold.demo.data import CATEGORIES, SCHEMA, generate_transactions, write_transactions


def test_schema_and_size() -> None:
    table = generate_transactions(20_000, seed=3)
    assert table.schema == SCHEMA
    assert table.num_rows == 20_000
    assert len(table.column("event_id").unique()) == 20_000
    assert all(column.null_count == 0 for column in table.columns)
    assert str(table.column("user_id")[0]).startswith("u")


def test_same_seed_same_table_other_seed_other_table() -> None:
    a = generate_transactions(5_000, seed=7)
    assert a.equals(generate_transactions(5_000, seed=7))
    assert not a.equals(generate_transactions(5_000, seed=8))


def test_sorted_by_time_and_within_days() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    table = generate_transactions(10_000, days=3, start=start)
    ms = table.column("event_time").cast("int64").to_numpy()
    assert np.all(np.diff(ms) >= 0)
    start_ms = int(start.timestamp() * 1000)
    assert ms.min() >= start_ms
    assert ms.max() < start_ms + 3 * 86_400_000


def test_codes_and_amounts_in_range() -> None:
    table = generate_transactions(10_000, n_merchants=200)
    category = table.column("merchant_category").to_numpy()
    assert category.min() >= 0
    assert category.max() < len(CATEGORIES)
    device = table.column("device").to_numpy()
    assert set(np.unique(device)) <= {0, 1, 2, 3}
    assert pc.min(table.column("amount")).as_py() > 0
    assert len(table.column("merchant_id").unique()) <= 200


def test_fraud_rate_in_range_and_fraud_comes_in_bursts() -> None:
    table = generate_transactions(50_000, seed=1)
    fraud = table.column("is_fraud").to_numpy()
    assert 0.005 <= fraud.mean() <= 0.02
    # Fraud is a burst on one card: most fraud events have another fraud event of the same user
    # within 10 minutes.
    frauds = table.filter(pc.equal(table.column("is_fraud"), 1)).sort_by([("user_id", "ascending")])
    users = frauds.column("user_id").to_numpy(zero_copy_only=False)
    ms = frauds.column("event_time").cast("int64").to_numpy()
    order = np.lexsort((ms, users))
    users, ms = users[order], ms[order]
    close = (users[1:] == users[:-1]) & (np.diff(ms) <= 600_000)
    assert close.mean() > 0.5


def test_fraud_rate_zero() -> None:
    assert pc.sum(generate_transactions(2_000, fraud_rate=0.0).column("is_fraud")).as_py() == 0


def test_naive_start_is_utc() -> None:
    naive = generate_transactions(100, start=datetime(2025, 4, 8))
    assert naive.equals(generate_transactions(100))


@pytest.mark.parametrize("kwargs", [{"n_events": 0}, {"n_users": 0}, {"days": 0}, {"fraud_rate": 0.9}])
def test_rejects_bad_arguments(kwargs: dict[str, int | float]) -> None:
    args = {"n_events": 100, **kwargs}
    with pytest.raises(ValueError, match="must"):
        generate_transactions(**args)  # type: ignore[arg-type]


def test_write_transactions_round_trips(tmp_path: Path) -> None:
    path = write_transactions(tmp_path / "sub" / "tx.parquet", n_events=3_000, seed=5)
    assert path.exists()
    assert pq.read_metadata(path).row_group(0).column(0).compression == "ZSTD"
    assert pq.read_table(path).equals(generate_transactions(3_000, seed=5))
