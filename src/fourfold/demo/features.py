"""The demo fraud model's features, defined once with fourfold's feature engine.

Request features come from the transaction itself; history features aggregate the user's earlier
transactions point-in-time (``t - W <= x.ts < t``), so training rows hold exactly what a live system
knew when each transaction arrived.

    >>> from fourfold.demo.data import generate_transactions
    >>> featurize(generate_transactions(2_000)).select(FEATURES).num_rows
    2000
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from fourfold.features import FeatureSet
from fourfold.features.offline import compute_features

__all__ = ["FEATURES", "FRAUD_FEATURES", "featurize", "feature_matrix"]

FRAUD_FEATURES = FeatureSet.load(Path(__file__).with_name("fraud_features.yaml"))
FEATURES: list[str] = list(FRAUD_FEATURES.names)


def featurize(log: pa.Table) -> pa.Table:
    """The log with every feature of :data:`FRAUD_FEATURES` added (the log's order is arrival order)."""
    features = compute_features(log, FRAUD_FEATURES)
    out = log
    for name in FEATURES:
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, features.column(name))
    return out.append_column("_late", features.column("_late"))


def feature_matrix(table: pa.Table, features: list[str] | None = None) -> np.ndarray:
    """The features as a C-contiguous float64 matrix in model order."""
    names = FEATURES if features is None else features
    return np.column_stack([np.asarray(table.column(n).to_numpy(), dtype=np.float64) for n in names])
