from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

import fourfold
from conftest import build
from fourfold import (
    InvalidNameError,
    InvalidURIError,
    LocalRegistry,
    ModelNotFoundError,
    TamperedPackageError,
    load_predictor,
    parse_uri,
    save_model,
)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, _, table = build("xgboost")
    return save_model(model, tmp_path_factory.mktemp("pkg") / "fraud", name="fraud", sample=table).path


def test_versions_increment_and_aliases_resolve(package: Path, fourfold_home: Path) -> None:
    reg = LocalRegistry()
    assert reg.root == fourfold_home / "registry"
    v1 = reg.register(package, name="fraud", aliases=["staging"])
    v2 = reg.register(package, name="fraud", aliases=["production"])
    assert (v1.version, v2.version) == (1, 2)
    assert v1.uri == "models:/fraud/1"
    reg.set_alias("fraud", 1, "production")
    assert reg.lookup("models:/fraud/production").version == 1
    assert reg.lookup("models:/fraud@staging").version == 1
    assert reg.lookup("models:/fraud/2").version == 2
    assert reg.lookup("models:/fraud").version == 2
    assert reg.lookup("models:/fraud/latest").version == 2
    assert reg.get("fraud", 1).aliases == ("production", "staging")
    pkg = reg.resolve("models:/fraud/production")
    assert (pkg.version, pkg.uri) == ("1", "models:/fraud/1")
    assert load_predictor("models:/fraud/production").version == "1"
    reg.delete_alias("fraud", "staging")
    with pytest.raises(ModelNotFoundError, match=r"no alias 'staging' \(aliases: production->v1\)"):
        reg.lookup("models:/fraud/staging")


def test_registered_name_overrides_the_package_name(package: Path) -> None:
    reg = LocalRegistry()
    reg.register(package, name="churn-model")
    assert reg.resolve("models:/churn-model/1").name == "churn-model"


def test_not_found_errors_name_what_exists(package: Path) -> None:
    reg = LocalRegistry()
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        reg.lookup("models:/nope/1")
    reg.register(package, name="fraud")
    with pytest.raises(ModelNotFoundError, match=r"no version 7 \(versions: 1\)"):
        reg.lookup("models:/fraud/7")
    with pytest.raises(ModelNotFoundError, match="no alias 'production'"):
        load_predictor("models:/fraud/production")
    with pytest.raises(ModelNotFoundError):
        reg.set_alias("fraud", 5, "production")


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "..", ".hidden", "", "x" * 200, "a..b", "/abs", "spa ce", "é"]
)
def test_path_traversal_and_odd_names_are_rejected(package: Path, name: str, fourfold_home: Path) -> None:
    with pytest.raises(InvalidNameError, match="invalid model name"):
        LocalRegistry().register(package, name=name)
    assert not (fourfold_home / "evil").exists()


@pytest.mark.parametrize("alias", ["1", "latest", "../x", "a b", ""])
def test_bad_aliases_rejected(package: Path, alias: str) -> None:
    reg = LocalRegistry()
    reg.register(package, name="fraud")
    with pytest.raises(InvalidNameError):
        reg.set_alias("fraud", 1, alias)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/fraud/production", ("fraud", None, "production")),
        ("models:/fraud/3", ("fraud", 3, None)),
        ("models:/fraud@staging", ("fraud", None, "staging")),
        ("models:/fraud", ("fraud", None, None)),
    ],
)
def test_parse_uri(uri: str, expected: tuple[str, int | None, str | None]) -> None:
    ref = parse_uri(uri)
    assert (ref.name, ref.version, ref.alias) == expected


@pytest.mark.parametrize(
    "uri", ["models:/", "models:/a/b/c", "models:/../x/1", "s3://bucket/model", "models:/a/0"]
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises((InvalidURIError, InvalidNameError)):
        parse_uri(uri)


def test_tampered_package_is_not_registered(package: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(package, copy)
    (copy / "artifacts" / "model.ubj").write_bytes(b"junk")
    with pytest.raises(TamperedPackageError):
        LocalRegistry().register(copy, name="fraud")
    assert LocalRegistry().versions("fraud") == []


def test_crash_mid_register_leaves_no_broken_version(
    package: Path, monkeypatch: pytest.MonkeyPatch, fourfold_home: Path
) -> None:
    reg = LocalRegistry()
    reg.register(package, name="fraud")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", crash)  # the moment a copy would become a version
    with pytest.raises(OSError, match="disk full"):
        reg.register(package, name="fraud")
    monkeypatch.undo()
    assert reg.versions("fraud") == [1]
    assert [
        p.name for p in (fourfold_home / "registry" / "fraud").iterdir() if p.name.startswith(".staging")
    ] == []
    assert reg.register(package, name="fraud").version == 2


def _register_many(home: str, package: str, n: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    os.environ["FOURFOLD_HOME"] = home
    out.put([LocalRegistry().register(package, name="fraud").version for _ in range(n)])


def test_concurrent_registration_from_two_processes_gets_distinct_versions(
    package: Path, fourfold_home: Path
) -> None:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_register_many, args=(str(fourfold_home), str(package), 4, out)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    got = sorted(v for _ in procs for v in out.get(timeout=120))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got == list(range(1, 9))
    assert LocalRegistry().versions("fraud") == list(range(1, 9))
    scores = {
        float(
            fourfold.load_predictor(f"models:/fraud/{v}").predict_one({f"x{i}": 0.0 for i in range(5)})[
                "score"
            ]
        )
        for v in got
    }
    assert len(scores) == 1
    assert np.isfinite(next(iter(scores)))
