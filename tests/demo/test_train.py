from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from fourfold.demo.data import generate_transactions
from fourfold.demo.features import FEATURES, feature_matrix, featurize
from fourfold.demo.train import TrainResult, split_by_day, train_fraud_model


@pytest.fixture(scope="module")
def result() -> TrainResult:
    return train_fraud_model(generate_transactions(50_000, seed=0), n_estimators=50)


def test_split_by_day_holds_out_last_utc_day() -> None:
    table = generate_transactions(7_000, days=4)
    train, holdout = split_by_day(table)
    assert train.num_rows + holdout.num_rows == table.num_rows
    train_days = train.column("event_time").cast("int64").to_numpy() // 86_400_000
    holdout_days = holdout.column("event_time").cast("int64").to_numpy() // 86_400_000
    assert len(np.unique(holdout_days)) == 1
    assert train_days.max() < holdout_days.min()
    assert len(np.unique(train_days)) == 3


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


def test_needs_two_days() -> None:
    with pytest.raises(ValueError, match="two calendar days"):
        train_fraud_model(generate_transactions(2_000, days=1), n_estimators=5)
