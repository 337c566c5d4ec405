"""Train the demo fraud model: engine features, a day-based split, XGBoost, AUC on the last day."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import roc_auc_score
from xgboost import XGBClassifier

from fourfold.demo.features import FEATURES, feature_matrix, featurize

__all__ = ["TrainResult", "split_by_day", "train_fraud_model"]

_DAY_MS = 86_400_000
_SAMPLE_ROWS = 256


@dataclass(frozen=True)
class TrainResult:
    """A fitted fraud model and what is needed to package and check it.

    ``sample`` holds up to 256 held-out rows of ``features`` as float64 columns, in model order.
    """

    model: Any
    features: list[str]
    auc: float
    n_train: int
    n_holdout: int
    sample: pa.Table


def split_by_day(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split ``table`` into (everything before the last UTC calendar day, the last UTC calendar day).

    >>> from fourfold.demo.data import generate_transactions
    >>> train, holdout = split_by_day(generate_transactions(7_000, days=7))
    >>> train.num_rows + holdout.num_rows
    7000
    """
    if table.num_rows == 0:
        raise ValueError("cannot split an empty table")
    column = table.column("event_time")
    ms = column.cast(pa.timestamp("ms", tz=column.type.tz), safe=False).cast(pa.int64()).to_numpy()
    day = np.asarray(ms, dtype=np.int64) // _DAY_MS
    is_holdout = pa.array(day == day.max())
    return table.filter(pc.invert(is_holdout)), table.filter(is_holdout)


def train_fraud_model(
    table: pa.Table, *, seed: int = 0, n_estimators: int = 200, max_depth: int = 6
) -> TrainResult:
    """Fit an XGBoost fraud classifier on all days but the last and score it on the last day.

    ``table`` is a transaction log (see ``fourfold.demo.data``); features are computed by the offline
    engine on the whole log first, so held-out events see their users' earlier days, as they would live.
    The model is fitted on a plain float64 matrix, so its booster carries no feature names.

    >>> from fourfold.demo.data import generate_transactions
    >>> result = train_fraud_model(generate_transactions(50_000), n_estimators=50)
    >>> result.features == FEATURES and result.auc > 0.85
    True
    """
    if not set(FEATURES) <= set(table.column_names):
        table = featurize(table)
    train, holdout = split_by_day(table)
    if train.num_rows == 0:
        raise ValueError("need at least two calendar days: the last one is held out")
    y_train = np.asarray(train.column("is_fraud").to_numpy(), dtype=np.int64)
    y_holdout = np.asarray(holdout.column("is_fraud").to_numpy(), dtype=np.int64)
    if len(np.unique(y_train)) < 2 or len(np.unique(y_holdout)) < 2:
        raise ValueError("both the training days and the held-out day need fraud and non-fraud events")

    model = XGBClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=0.1,
        tree_method="hist",
        n_jobs=2,
        random_state=seed,
        eval_metric="auc",
    )
    model.fit(feature_matrix(train), y_train)
    x_holdout = feature_matrix(holdout)
    auc = float(roc_auc_score(y_holdout, model.predict_proba(x_holdout)[:, 1]))

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(holdout.num_rows, size=min(_SAMPLE_ROWS, holdout.num_rows), replace=False))
    sample = pa.table({name: pa.array(x_holdout[rows, i]) for i, name in enumerate(FEATURES)})
    return TrainResult(
        model=model,
        features=list(FEATURES),
        auc=auc,
        n_train=train.num_rows,
        n_holdout=holdout.num_rows,
        sample=sample,
    )
