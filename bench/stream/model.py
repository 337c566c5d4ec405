"""The bench's model: XGBoost (100 trees, depth 5) on [amount, txn_count_10m, amount_sum_10m] computed by
fourfold's offline engine on demo transactions, saved as a fourfold package with its features.yaml and
compiled (the runtime every leg's ``load_predictor`` then picks is the one ``fourfold compile`` chose)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from job import BLOCK_ABOVE, FEATURES, FEATURES_YAML
from xgboost import XGBClassifier

from fourfold import compile_model, save_model
from fourfold.demo.data import generate_transactions
from fourfold.features import FeatureSet, compute_features
from fourfold.model.signature import Feature, Signature


def build_model(path: Path, *, events: int = 200_000, seed: int = 1) -> Path:
    """Train on ``events`` demo transactions (another seed than the bench's events) and write the package."""
    features = FeatureSet.from_dict(FEATURES_YAML)
    log = generate_transactions(events, seed=seed)
    table = compute_features(log, features)
    x = np.column_stack([np.asarray(table.column(n).to_numpy(), dtype=np.float64) for n in FEATURES])
    y = np.asarray(log.column("is_fraud").to_numpy(), dtype=np.int64)
    model = XGBClassifier(n_estimators=100, max_depth=5, learning_rate=0.1, tree_method="hist", n_jobs=2)
    model.fit(x, y)
    signature = Signature.for_task("binary", [Feature(name, "float64") for name in FEATURES])
    sample = {name: x[:256, i] for i, name in enumerate(FEATURES)}
    pkg = save_model(
        model, path, name="fraud-stream", signature=signature, sample=sample, features=features,
        threshold=BLOCK_ABOVE, overwrite=True,
    )  # fmt: skip
    compile_model(pkg.path)
    return pkg.path
