from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from fourfold.demo.data import generate_transactions
from fourfold.demo.features import FEATURES, feature_matrix, featurize
from fourfold.demo.train import TrainResult, split_last_24h, train_fraud_model

_DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def result() -> TrainResult:
    return train_fraud_model(generate_transactions(50_000, seed=0), n_estimators=50)


@pytest.mark.parametrize(
    "start", [datetime(2025, 1, 1, 0, 5, tzinfo=UTC), datetime(2025, 1, 1, 13, 30, tzinfo=UTC)]
)
def test_split_holds_out_the_last_24_hours_whatever_the_time_of_day(start: datetime) -> None:
    table = generate_transactions(7_000, days=4, start=start)
    train, holdout = split_last_24h(table)
    assert train.num_rows + holdout.num_rows == table.num_rows
    train_ms = train.column("event_time").cast("int64").to_numpy()
    holdout_ms = holdout.column("event_time").cast("int64").to_numpy()
    end = holdout_ms.max()
    assert end == table.column("event_time").cast("int64").to_numpy().max()
    assert train_ms.max() <= end - _DAY_MS < holdout_ms.min()
    assert holdout_ms.min() - (end - _DAY_MS) < 60_000  # the whole 24 hours, not a calendar day's tail
    assert 0.2 < holdout.num_rows / table.num_rows < 0.3


def test_same_log_at_another_time_of_day_gives_the_same_model() -> None:
    # The demo's log ends whenever it runs: the split and the AUC must not depend on that.
    def fit(start: datetime) -> TrainResult:
        return train_fraud_model(generate_transactions(20_000, start=start), n_estimators=10, max_depth=3)

    midnight = fit(datetime(2025, 1, 1, tzinfo=UTC))
    evening = fit(datetime(2025, 1, 1, 21, 37, 5, tzinfo=UTC))
    assert (evening.n_train, evening.n_holdout) == (midnight.n_train, midnight.n_holdout)
    assert evening.auc == midnight.auc


def test_auc_is_good(result: TrainResult) -> None:
    assert result.auc > 0.85
    assert result.n_train + result.n_holdout == 50_000
    assert 0 < result.n_holdout < result.n_train


def test_model_has_no_feature_names_and_sample_matches(result: TrainResult) -> None:
    assert result.features == FEATURES
    assert result.model.get_booster().feature_names is None
    sample = result.sample
    assert sample.column_names == FEATURES
    assert sample.num_rows == 256
    assert all(t == pa.float64() for t in sample.schema.types)
    proba = result.model.predict_proba(feature_matrix(sample))[:, 1]
    assert proba.shape == (256,)
    assert np.all((proba >= 0) & (proba <= 1))


def test_result_is_frozen(result: TrainResult) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.auc = 1.0  # type: ignore[misc]


def test_deterministic_and_accepts_precomputed_features() -> None:
    table = generate_transactions(20_000, seed=2)
    a = train_fraud_model(table, n_estimators=10, max_depth=3)
    b = train_fraud_model(featurize(table), n_estimators=10, max_depth=3)
    assert a.auc == b.auc
    np.testing.assert_array_equal(feature_matrix(a.sample), feature_matrix(b.sample))  # NaN == NaN here


def test_needs_events_before_the_last_24_hours() -> None:
    with pytest.raises(ValueError, match="before the last 24 hours"):
        train_fraud_model(generate_transactions(2_000, days=1), n_estimators=5)
