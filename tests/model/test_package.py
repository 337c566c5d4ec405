from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fourfold
from conftest import FEATURES, build, native_scores
from fourfold import (
    Feature,
    PackageError,
    Signature,
    TamperedPackageError,
    UnsupportedModelError,
    UntrustedModelError,
    load_package,
    save_model,
)

KINDS = ["sklearn_gbdt", "sklearn_pipeline", "xgboost", "lightgbm", "torch_mlp"]
FLAVOR = {"sklearn_gbdt": "sklearn", "sklearn_pipeline": "sklearn", "xgboost": "xgboost",
          "lightgbm": "lightgbm", "torch_mlp": "torch"}  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_identical_predictions(kind: str, tmp_path: Path) -> None:
    model, x, table = build(kind)
    pkg = save_model(model, tmp_path / kind, name=kind, sample=table, metadata={"owner": "risk"})
    loaded = load_package(pkg.path)
    assert loaded.flavor == FLAVOR[kind]
    assert loaded.signature.feature_names == tuple(FEATURES)
    assert loaded.signature.task == "binary"
    assert loaded.manifest["metadata"] == {"owner": "risk"}
    assert set(loaded.manifest["files"]) >= {"sample.parquet"}
    scores = fourfold.Predictor(loaded, runtime="native").predict(table)["score"]
    np.testing.assert_allclose(scores, native_scores(kind, model, x), rtol=0, atol=1e-12)


def test_state_dict_torch_package_loads_with_weights_only(tmp_path: Path) -> None:
    model, x, table = build("torch_mlp")
    pkg = save_model(
        model, tmp_path / "sd", name="mlp", sample=table, torch_format="state_dict",
        module_class="nets:MLP", init_kwargs={"n_features": 5},
    )  # fmt: skip
    assert pkg.manifest["flavor_options"]["module_class"] == "nets:MLP"
    scores = fourfold.Predictor(load_package(pkg.path)).predict(table)["score"]
    np.testing.assert_allclose(scores, native_scores("torch_mlp", model, x), atol=1e-7)


def test_manifest_records_versions_hashes_and_signature(tmp_path: Path) -> None:
    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "m", name="fraud", sample=table, threshold=0.85)
    m = pkg.manifest
    assert m["versions"]["xgboost"]
    assert m["versions"]["fourfold"] == fourfold.__version__
    assert all(len(h) == 64 for h in m["files"].values())
    assert m["threshold"] == 0.85
    assert [o["name"] for o in m["signature"]["outputs"]] == ["score", "label"]
    assert m["created_at"].endswith("+00:00")


@pytest.mark.parametrize("victim", ["artifacts/model.ubj", "sample.parquet"])
def test_tampered_file_is_refused(tmp_path: Path, victim: str) -> None:
    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "m", name="m", sample=table)
    with (pkg.path / victim).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(TamperedPackageError, match=victim.replace(".", r"\.")):
        load_package(pkg.path)


def test_extra_and_missing_files_are_refused(tmp_path: Path) -> None:
    model, _, table = build("lightgbm")
    pkg = save_model(model, tmp_path / "m", name="m", sample=table)
    (pkg.path / "artifacts" / "evil.py").write_text("print('hi')")
    with pytest.raises(TamperedPackageError, match=r"evil\.py is not listed"):
        load_package(pkg.path)
    (pkg.path / "artifacts" / "evil.py").unlink()
    (pkg.path / "artifacts" / "model.txt").unlink()
    with pytest.raises(TamperedPackageError, match="missing"):
        load_package(pkg.path)


def test_skops_loads_without_trusted(tmp_path: Path) -> None:
    model, x, table = build("sklearn_pipeline")
    pkg = save_model(model, tmp_path / "m", name="m", sample=table)
    assert pkg.manifest["flavor_options"]["serializer"] == "skops"
    p = fourfold.Predictor(load_package(pkg.path))  # trusted=False is the default
    np.testing.assert_allclose(p.predict(table)["score"], model.predict_proba(x)[:, 1])


def test_pickle_needs_explicit_trust(tmp_path: Path) -> None:
    model, x, table = build("sklearn_gbdt")
    pkg = save_model(model, tmp_path / "m", name="m", sample=table, serializer="pickle")
    with pytest.raises(UntrustedModelError, match="trusted=True"):
        fourfold.Predictor(load_package(pkg.path))
    p = fourfold.Predictor(load_package(pkg.path), trusted=True)
    np.testing.assert_allclose(p.predict(table)["score"], model.predict_proba(x)[:, 1])


class _Custom:  # a user-defined class skops will not trust by itself
    pass


def test_skops_refuses_unknown_types_at_save(tmp_path: Path) -> None:
    from sklearn.preprocessing import FunctionTransformer

    model, x, table = build("sklearn_gbdt")
    odd = FunctionTransformer(func=np.log1p).fit(x)
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(odd, model)
    pipe.custom_ = _Custom()
    with pytest.raises(UntrustedModelError, match="_Custom"):
        save_model(pipe, tmp_path / "m", name="m", sample=table)
    assert not (tmp_path / "m").exists()


def test_signature_given_explicitly_and_mismatch_refused(tmp_path: Path) -> None:
    model, _, _ = build("xgboost")
    sig = Signature.for_task("binary", [Feature(f) for f in FEATURES[:3]])
    with pytest.raises(PackageError, match="takes 5 features"):
        save_model(model, tmp_path / "m", name="m", signature=sig)
    nullable = Signature.for_task("binary", [Feature(f, nullable=True) for f in FEATURES])
    pkg = save_model(model, tmp_path / "n", name="m", signature=nullable)
    assert all(f.nullable for f in load_package(pkg.path).signature.inputs)


def test_existing_target_needs_overwrite(tmp_path: Path) -> None:
    model, _, table = build("xgboost")
    save_model(model, tmp_path / "m", name="m", sample=table)
    with pytest.raises(PackageError, match="overwrite"):
        save_model(model, tmp_path / "m", name="m", sample=table)
    save_model(model, tmp_path / "m", name="m2", sample=table, overwrite=True)
    assert load_package(tmp_path / "m").name == "m2"


def test_unsupported_model_named(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="dict"):
        save_model({"not": "a model"}, tmp_path / "m", name="m")


def test_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="not a fourfold model package"):
        load_package(tmp_path)


def test_feature_set_is_stored_in_signature_order_and_hashed(tmp_path: Path) -> None:
    from fourfold.features import DefinitionError, FeatureSet

    definitions = {
        "name": "toy",
        "entities": [{"name": "user", "join_key": "user_id"}],
        "sources": [{"name": "tx", "entity": "user", "timestamp": "ts"}],
        "features": [
            {"name": f"x{i}", "source": "tx", "agg": "sum", "column": "amount", "window": f"{i + 1}h"}
            for i in reversed(range(5))
        ],
    }
    fs = FeatureSet.from_dict(definitions)
    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "m", name="m", sample=table, features=fs)
    loaded = load_package(pkg.path)
    stored = loaded.features()
    assert stored is not None
    assert stored.names == loaded.signature.feature_names == tuple(FEATURES)
    assert "features.yaml" in loaded.manifest["files"]
    (pkg.path / "features.yaml").write_text((pkg.path / "features.yaml").read_text().replace("1h", "2h"))
    with pytest.raises(TamperedPackageError, match=r"features\.yaml"):
        load_package(pkg.path)
    partial = FeatureSet.from_dict({**definitions, "features": definitions["features"][:2]})
    with pytest.raises(DefinitionError, match="does not define 'x0'"):
        save_model(model, tmp_path / "n", name="m", sample=table, features=partial)
    assert load_package(save_model(model, tmp_path / "o", name="m", sample=table).path).features() is None
