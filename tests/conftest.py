"""Shared fixtures: an isolated FOURFOLD_HOME per test and real tiny models of every flavor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

N_FEATURES = 5
FEATURES = [f"x{i}" for i in range(N_FEATURES)]


@pytest.fixture(autouse=True)
def fourfold_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "ff-home"
    monkeypatch.setenv("FOURFOLD_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FOURFOLD_REGISTRY", "auto")  # recorded, so a CLI run that sets it is undone
    return home


def make_data(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_FEATURES))
    y = (x[:, 0] + 0.8 * x[:, 1] ** 2 - 0.5 * x[:, 2] + rng.standard_normal(n) * 0.4 > 0.6).astype(np.int64)
    return x, y, pa.table({name: x[:, i] for i, name in enumerate(FEATURES)})


@pytest.fixture(scope="session")
def data() -> tuple[np.ndarray, np.ndarray, pa.Table]:
    return make_data()


def _sklearn_gbdt(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0).fit(x, y)


def _sklearn_pipeline(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x * 10 + 3, y)


def _xgboost(x: np.ndarray, y: np.ndarray) -> Any:
    import xgboost as xgb

    return xgb.XGBClassifier(n_estimators=25, max_depth=3, n_jobs=1, random_state=0).fit(x, y)


def _lightgbm(x: np.ndarray, y: np.ndarray) -> Any:
    import lightgbm as lgb

    return lgb.LGBMClassifier(n_estimators=25, num_leaves=8, n_jobs=1, verbose=-1, random_state=0).fit(x, y)


def _torch_mlp(x: np.ndarray, y: np.ndarray) -> Any:
    import torch

    from nets import MLP

    torch.manual_seed(0)
    model = MLP(N_FEATURES)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xt).reshape(-1), yt)
        loss.backward()
        opt.step()
    return model.eval()


BUILDERS: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {
    "sklearn_gbdt": _sklearn_gbdt,
    "sklearn_pipeline": _sklearn_pipeline,
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
    "torch_mlp": _torch_mlp,
}


def build(kind: str, seed: int = 0) -> tuple[Any, np.ndarray, pa.Table]:
    """A fitted tiny model of ``kind``, the matrix it was fitted on, and that data as an Arrow table."""
    x, y, table = make_data(seed=seed)
    if kind == "sklearn_pipeline":
        x = x * 10 + 3
        table = pa.table({name: x[:, i] for i, name in enumerate(FEATURES)})
    return BUILDERS[kind](x, y), x, table


def native_scores(kind: str, model: Any, x: np.ndarray) -> np.ndarray:
    """The framework's own call, for comparison with fourfold's predictor."""
    if kind == "torch_mlp":
        import torch

        with torch.no_grad():
            return np.asarray(torch.sigmoid(model(torch.tensor(x, dtype=torch.float32))).numpy().reshape(-1))
    return np.asarray(model.predict_proba(x)[:, 1])
