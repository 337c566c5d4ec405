"""MLflow interop against a real local MLflow store (sqlite registry, file artifacts): no mocks."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

# mlflow itself is imported inside the fixtures: its import is slow and stateful (the dev extras install it)
import pandas as pd
import pytest
import xgboost as xgb

import fourfold
from fourfold.errors import (
    MissingExtraError,
    ModelNotFoundError,
    UnsupportedModelError,
    UntrustedModelError,
)
from fourfold.registry.mlflow import _public, resolve_mlflow
from fourfold.registry.uri import parse_uri

# MLflow's own import-time noise, which it hides by patching warnings.showwarning (so only an "error"
# filter sees it): importing its sqlalchemy tracking store configures ORM mappers that SQLAlchemy 2.1
# deprecates, and importing mlflow.pyfunc infers a schema from its own `Any` type hints (the message
# starts with an ANSI colour code, hence the leading `.*`).
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
    ),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]


@dataclass
class Store:
    uri: str
    x: Any  # the pandas DataFrame every model was fitted on
    models: dict[str, Any]  # registered name/version -> the fitted model that was logged


def _data() -> tuple[Any, Any]:
    rng = np.random.default_rng(7)
    n = 300
    x = pd.DataFrame(
        {
            "tenure": rng.normal(size=n),
            "spend": rng.normal(size=n).astype(np.float32),
            "calls": rng.integers(0, 6, size=n),
        }
    )
    y = ((x["tenure"] + x["spend"] + 0.3 * x["calls"] + rng.normal(scale=0.5, size=n)) > 0.8).astype(int)
    return x, y


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.setenv("GIT_PYTHON_REFRESH", "quiet")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield _build_store(root, uri)


def _build_store(root: Path, uri: str) -> Store:
    import mlflow
    import mlflow.lightgbm
    import mlflow.pyfunc
    import mlflow.sklearn
    import mlflow.xgboost
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = _data()
    experiment = mlflow.create_experiment("fourfold-tests", artifact_location=(root / "artifacts").as_uri())
    with warnings.catch_warnings():  # a hint that int columns cannot hold missing values
        warnings.filterwarnings(
            "ignore", message="Hint: Inferred schema contains integer", category=UserWarning
        )
        signature = infer_signature(x, np.zeros(len(x)))
    models: dict[str, Any] = {}

    def log(flavor: Any, model: Any, name: str, **kwargs: Any) -> None:
        with mlflow.start_run(experiment_id=experiment):
            info = flavor.log_model(
                model, name="model", registered_model_name=name, pip_requirements=[], **kwargs
            )
        models[f"{name}/{info.registered_model_version}"] = model

    lr = LogisticRegression(max_iter=500).fit(x, y)
    log(mlflow.sklearn, lr, "churn-model", signature=signature, pyfunc_predict_fn="predict_proba")
    gb = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(x, y)
    log(
        mlflow.sklearn,
        gb,
        "churn-model",
        signature=signature,
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
    xm = xgb.XGBClassifier(n_estimators=15, max_depth=3).fit(x, y)
    log(mlflow.xgboost, xm, "xgb-churn", signature=signature)
    log(mlflow.xgboost, xm, "xgb-churn")  # v2: no MLflow signature, the booster's own feature names
    lm = lgb.LGBMClassifier(n_estimators=15, verbose=-1).fit(x, y)
    nullable = ModelSignature(
        Schema(
            [
                ColSpec("double", "tenure", required=False),
                ColSpec("float", "spend"),
                ColSpec("integer", "calls"),
            ]
        )
    )
    log(mlflow.lightgbm, lm, "lgb-churn", signature=nullable)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1}, lgb.Dataset(x.to_numpy(), y), num_boost_round=5
    )
    log(mlflow.lightgbm, booster, "lgb-unnamed")  # no signature, no feature names: cannot be converted

    class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[float]:
            return [2.0 * v for v in model_input["tenure"]]

    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="model", python_model=Doubler(), registered_model_name="custom", pip_requirements=[]
        )
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("churn-model", "production", "1")
    client.set_registered_model_alias("xgb-churn", "production", "1")
    with warnings.catch_warnings():  # stages are deprecated in MLflow; registries still carry them
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage("churn-model", "2", "Staging")
    return Store(uri, x, models)


@pytest.fixture
def env(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FOURFOLD_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("FOURFOLD_REGISTRY", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return home


def _resolve(uri: str, home: Path) -> fourfold.ModelPackage:
    return resolve_mlflow(parse_uri(uri), home=home)


def test_production_alias_scores_like_mlflow(
    store: Store, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    monkeypatch.setenv("FOURFOLD_REGISTRY", "local")  # the explicit argument wins
    predictor = fourfold.load_predictor("models:/churn-model/production", registry="mlflow")
    assert predictor.version == "1"
    assert predictor.package.uri == "models:/churn-model/1"
    scores = predictor.predict(store.x)["score"]
    np.testing.assert_allclose(scores, store.models["churn-model/1"].predict_proba(store.x)[:, 1], rtol=1e-9)
    served = mlflow.pyfunc.load_model("models:/churn-model@production").predict(
        store.x
    )  # MLflow's alias form
    np.testing.assert_allclose(scores, np.asarray(served)[:, 1], rtol=1e-9)
    first = store.x.iloc[0].to_dict()
    assert predictor.predict_one(first)["score"] == pytest.approx(scores[0], rel=1e-9)


def test_tracking_uri_env_selects_mlflow(store: Store, env: Path) -> None:
    predictor = fourfold.load_predictor("models:/churn-model/production")  # FOURFOLD_REGISTRY=auto
    assert (predictor.version, predictor.package.flavor) == ("1", "sklearn")
    assert predictor.package.path == env / "mlflow-cache" / "churn-model" / "1"


@pytest.mark.parametrize(
    ("uri", "version"),
    [
        ("models:/churn-model/1", "1"),
        ("models:/churn-model/2", "2"),
        ("models:/churn-model", "2"),
        ("models:/churn-model/latest", "2"),
        ("models:/churn-model@production", "1"),
        ("models:/churn-model/Staging", "2"),  # a legacy stage, no alias of that name
        ("models:/churn-model/staging", "2"),
        ("models:/xgb-churn/production", "1"),
    ],
)
def test_versions_aliases_and_stages(store: Store, env: Path, uri: str, version: str) -> None:
    package = _resolve(uri, env)
    assert package.version == version
    assert package.path == env / "mlflow-cache" / package.name / version
    model = store.models[f"{package.name}/{version}"]
    scores = fourfold.Predictor(package).predict(store.x)["score"]
    np.testing.assert_allclose(scores, model.predict_proba(store.x)[:, 1], rtol=1e-9)


def test_signature_follows_mlflow(store: Store, env: Path) -> None:
    import mlflow.models

    package = _resolve("models:/churn-model/1", env)
    mlflow_sig = mlflow.models.get_model_info("models:/churn-model/1").signature
    assert (
        package.signature.feature_names
        == tuple(mlflow_sig.inputs.input_names())
        == ("tenure", "spend", "calls")
    )
    assert [(f.dtype, f.nullable) for f in package.signature.inputs] == [
        ("float64", False), ("float32", False), ("int64", False),
    ]  # fmt: skip
    assert package.signature.task == "binary"
    meta = package.manifest["metadata"]["mlflow"]
    assert meta["model_uri"] == "models:/churn-model/1"
    assert (meta["name"], meta["version"], meta["tracking_uri"]) == ("churn-model", 1, store.uri)
    assert meta["run_id"] == mlflow.models.get_model_info("models:/churn-model/1").run_id


def test_xgboost_and_lightgbm(store: Store, env: Path) -> None:
    import mlflow.lightgbm
    import mlflow.xgboost

    xgb_pkg = _resolve("models:/xgb-churn/1", env)
    native = mlflow.xgboost.load_model("models:/xgb-churn/1")
    scores = fourfold.Predictor(xgb_pkg).predict(store.x)["score"]
    np.testing.assert_allclose(scores, native.predict_proba(store.x)[:, 1], rtol=1e-9)
    assert xgb_pkg.flavor == "xgboost"

    lgb_pkg = _resolve("models:/lgb-churn/1", env)
    assert lgb_pkg.flavor == "lightgbm"
    assert [(f.name, f.dtype, f.nullable) for f in lgb_pkg.signature.inputs] == [
        ("tenure", "float64", True), ("spend", "float32", False), ("calls", "int32", False),
    ]  # fmt: skip
    native = mlflow.lightgbm.load_model("models:/lgb-churn/1")
    scores = fourfold.Predictor(lgb_pkg).predict(store.x)["score"]
    np.testing.assert_allclose(scores, native.predict_proba(store.x)[:, 1], rtol=1e-9)


def test_no_signature_uses_the_models_feature_names(store: Store, env: Path) -> None:
    package = _resolve("models:/xgb-churn/2", env)
    assert package.signature.feature_names == ("tenure", "spend", "calls")
    scores = fourfold.Predictor(package).predict(store.x)["score"]
    np.testing.assert_allclose(scores, store.models["xgb-churn/2"].predict_proba(store.x)[:, 1], rtol=1e-9)
    with pytest.raises(UnsupportedModelError, match="a signature is needed"):
        _resolve("models:/lgb-unnamed/1", env)


def test_pyfunc_models(store: Store, env: Path) -> None:
    import mlflow.models

    flavors = mlflow.models.get_model_info("models:/xgb-churn/1").flavors
    assert set(flavors) == {"python_function", "xgboost"}
    assert _resolve("models:/xgb-churn/1", env).flavor == "xgboost"  # the native flavor, not pyfunc
    with pytest.raises(UnsupportedModelError, match=r"flavor\(s\) python_function .*custom python_function"):
        _resolve("models:/custom/1", env)
    assert [p.name for p in (env / "mlflow-cache" / "custom").iterdir()] == [".1.lock"]  # no half cache


def test_mlflow_pickle_switch_off_refuses_serialized_models(
    store: Store, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(UntrustedModelError, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION") as err:
        _resolve("models:/churn-model/1", env)
    assert err.value.status == 403
    assert _resolve("models:/xgb-churn/1", env).flavor == "xgboost"  # a native file, no deserialization


def test_credentials_stay_out_of_the_metadata() -> None:
    assert _public("https://user:secret@mlflow.example.com:5000/x") == "https://mlflow.example.com:5000/x"
    assert _public("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_unknown_model_version_alias(store: Store, env: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no alias 'champion'.*aliases: production -> 1") as err:
        _resolve("models:/churn-model/champion", env)
    assert err.value.status == 404
    with pytest.raises(ModelNotFoundError, match=r"no version 9; versions: 1, 2"):
        _resolve("models:/churn-model/9", env)
    with pytest.raises(ModelNotFoundError, match=r"no registered model 'nope'.*churn-model"):
        fourfold.load_predictor("models:/nope/production", registry="mlflow")


def test_cache_is_reused_and_rebuilt_when_tampered(
    store: Store, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.artifacts

    calls = []
    download = mlflow.artifacts.download_artifacts

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("artifact_uri"))
        return download(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counting)
    first = _resolve("models:/churn-model/production", env)
    files = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in first.path.rglob("*")}
    second = _resolve("models:/churn-model/1", env)
    assert second.path == first.path
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in second.path.rglob("*")} == files
    assert calls == ["models:/churn-model/1"]
    assert [p.name for p in first.path.parent.iterdir() if not p.name.endswith(".lock")] == ["1"]

    model_file = next((first.path / "artifacts").iterdir())
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    third = _resolve("models:/churn-model/1", env)
    assert calls == ["models:/churn-model/1"] * 2
    assert fourfold.load_package(third.path).path == first.path


def test_mlflow_missing_names_the_extra(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MissingExtraError, match=r"fourfold\[mlflow\]"):
        _resolve("models:/churn-model/1", env)


def test_cli_lists_and_shows_mlflow_models(store: Store, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fourfold.cli.main import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    runner = CliRunner()
    r = runner.invoke(app, ["--registry", "mlflow", "models", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = {(row["name"], row["version"]): row for row in json.loads(r.stdout)}
    assert rows[("churn-model", 1)]["aliases"] == ["production"]
    assert ("churn-model", 2) in rows
    r = runner.invoke(app, ["--registry", "mlflow", "models", "show", "models:/churn-model/production"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["version"] == "1"
    assert shown["metadata"]["mlflow"]["name"] == "churn-model"
    r = runner.invoke(app, ["--registry", "local", "models", "show", "models:/churn-model/production"])
    assert r.exit_code != 0  # the local registry does not have it
    assert isinstance(r.exception, fourfold.ModelNotFoundError)
