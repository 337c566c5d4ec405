"""Train the demo fraud model: engine features, the last 24 hours held out, XGBoost, AUC on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import roc_auc_score
from xgboost import XGBClassifier

from fourfold.demo.features import FEATURES, feature_matrix, featurize

__all__ = ["TrainResult", "split_last_24h", "train_fraud_model"]

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


def split_last_24h(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split ``table`` into (events before the log's last 24 hours, events in its last 24 hours).

    The last 24 hours end at the newest event, not at a calendar day's end, so the held-out part is a
    full day whatever the time of day the log ends at (the demo's log ends at the time it runs).

    >>> from datetime import UTC, datetime
    >>> from fourfold.demo.data import generate_transactions
    >>> log = generate_transactions(7_000, days=3, start=datetime(2025, 1, 1, 0, 5, tzinfo=UTC))
    >>> train, holdout = split_last_24h(log)
    >>> [round((t["event_time"][-1].as_py() - t["event_time"][0].as_py()).total_seconds() / 3600)
    ...  for t in (train, holdout)]
    [48, 24]
    """
    if table.num_rows == 0:
        raise ValueError("cannot split an empty table")
    column = table.column("event_time")
    ms = column.cast(pa.timestamp("ms", tz=column.type.tz), safe=False).cast(pa.int64()).to_numpy()
    ms = np.asarray(ms, dtype=np.int64)
    is_holdout = pa.array(ms > ms.max() - _DAY_MS)
    return table.filter(pc.invert(is_holdout)), table.filter(is_holdout)


def train_fraud_model(
    table: pa.Table, *, seed: int = 0, n_estimators: int = 200, max_depth: int = 6
) -> TrainResult:
    """Fit an XGBoost fraud classifier on the log but its last 24 hours and score it on those 24 hours.

    ``table`` is a transaction log (see ``fourfold.demo.data``); features are computed by the offline
    engine on the whole log first, so held-out events see their users' earlier events, as they would live.
    The model is fitted on a plain float64 matrix, so its booster carries no feature names.

    >>> from fourfold.demo.data import generate_transactions
    >>> result = train_fraud_model(generate_transactions(50_000), n_estimators=50)
    >>> result.features == FEATURES and result.auc > 0.85
    True
    """
    if not set(FEATURES) <= set(table.column_names):
        table = featurize(table)
    train, holdout = split_last_24h(table)
    if train.num_rows == 0:
        raise ValueError("need events before the last 24 hours: the last 24 hours are held out")
    y_train = np.asarray(train.column("is_fraud").to_numpy(), dtype=np.int64)
    y_holdout = np.asarray(holdout.column("is_fraud").to_numpy(), dtype=np.int64)
    if len(np.unique(y_train)) < 2 or len(np.unique(y_holdout)) < 2:
        raise ValueError(
            "both the training events and the held-out last 24 hours need fraud and non-fraud events"
        )

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
