from __future__ import annotations

import concurrent.futures as cf
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from fourfold import LocalRegistry, load_predictor
from fourfold.demo.features import FEATURES, FRAUD_FEATURES
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import open_store
from fourfold.online.settings import ServeSettings
from serving import running

JSON = {"content-type": "application/json"}


def _settings(model: str, store: str, **kw: Any) -> ServeSettings:
    return ServeSettings(model=model, store=store, reload_interval_s=0, access_log=False, **kw)


def _request(row: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": row["user_id"], "amount": row["amount"], "merchant_category": row["merchant_category"],
            "device": row["device"]}  # fmt: skip


def test_predict_fetches_features_and_scores_like_the_predictor(
    registered: str, store_url: str, fraud_log: pa.Table, as_of: int
) -> None:
    rows = fraud_log.slice(15_000, 50).to_pylist()
    with running(_settings(registered, store_url, cache_size=0), clock=lambda: as_of) as base:
        got = [httpx.post(base + "/predict", json=_request(r)).json() for r in rows]
    store = open_store(store_url)
    expected_features = OnlineFeatures(FRAUD_FEATURES, store).get([r["user_id"] for r in rows], at_ms=as_of)
    store.close()
    # the store matters here: windows as of the server's clock hold recent events ...
    assert sum(f is not None and f["txn_count_1h"] > 0 for f in expected_features) >= 5
    p = load_predictor(registered)
    empty = OnlineFeatures(FRAUD_FEATURES).empty(as_of)
    ignored_store = 0
    for r, g, f in zip(rows, got, expected_features, strict=True):
        assert f is not None
        assert g["model_version"] == "1"
        assert g["degraded"] is False
        assert g["entity_found"] is True
        assert len(g["request_id"]) == 32
        fields = {k: r[k] for k in ("amount", "merchant_category", "device")}
        want = p.predict_one({**f, **fields})
        assert g["score"] == float(want["score"])  # type: ignore[arg-type]
        assert g["label"] == want["label"]
        assert "decision" not in g  # the package set no threshold of its own
        ignored_store += g["score"] != p.predict_one({**empty, **fields})["score"]
    assert ignored_store >= 5  # ... and a server that ignored it would have answered otherwise


def test_oip_endpoints_follow_the_spec(registered: str, store_url: str) -> None:
    with running(_settings(registered, store_url)) as base:
        assert httpx.get(base + "/v2/health/live").json() == {"live": True}
        assert httpx.get(base + "/v2/health/ready").json() == {"ready": True}
        meta = httpx.get(base + "/v2").json()
        assert meta["name"] == "fourfold"
        assert "version" in meta
        model = httpx.get(base + "/v2/models/fraud").json()
        assert [i["name"] for i in model["inputs"]] == FEATURES
        assert model["versions"] == ["1"]
        assert httpx.get(base + "/v2/models/fraud/versions/1/ready").json()["ready"] is True
        assert httpx.get(base + "/v2/models/fraud/versions/9").status_code == 404
        assert httpx.get(base + "/v2/models/other").status_code == 404

        flat = list(np.arange(20, dtype=float))
        nested = [flat[:10], flat[10:]]
        a = httpx.post(base + "/v2/models/fraud/infer", json={"id": "r1", "inputs": [
            {"name": "input-0", "shape": [2, 10], "datatype": "FP64", "data": nested}]}).json()  # fmt: skip
        b = httpx.post(base + "/v2/models/fraud/versions/1/infer", json={"inputs": [
            {"name": "input-0", "shape": [2, 10], "datatype": "FP32", "data": flat}],
            "outputs": [{"name": "score"}]}).json()  # fmt: skip
        assert a["id"] == "r1"
        assert a["model_name"] == "fraud"
        assert a["model_version"] == "1"
        assert [o["name"] for o in a["outputs"]] == ["score", "label"]
        assert a["outputs"][0]["shape"] == [2]
        assert a["outputs"][0]["datatype"] == "FP64"
        assert [o["name"] for o in b["outputs"]] == ["score"]
        np.testing.assert_allclose(a["outputs"][0]["data"], b["outputs"][0]["data"], atol=1e-6)
        per_feature = httpx.post(base + "/v2/models/fraud/infer", json={"parameters": {"content_type": "pd"},
            "inputs": [{"name": f, "shape": [2], "datatype": "FP64", "data": [nested[0][i], nested[1][i]]}
                       for i, f in enumerate(FEATURES)]}).json()  # fmt: skip
        np.testing.assert_allclose(per_feature["outputs"][0]["data"], a["outputs"][0]["data"])


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "needle"),
    [
        ("/predict", b"{bad", JSON, 400, "malformed JSON"),
        ("/predict", b'{"user_id": "u1"}', {"content-type": "text/plain"}, 415, "content type"),
        ("/predict", b'{"amount": 1}', JSON, 422, "'user_id'"),
        ("/predict", b'{"user_id": "u1", "amount": "x", "merchant_category": 1, "device": 1}', JSON, 422, "'amount'"),  # noqa: E501
        ("/predict", b'{"user_id": "u1", "merchant_category": 1, "device": 1}', JSON, 422, "'amount' is missing"),  # noqa: E501
        ("/predict", b"[1, 2]", JSON, 422, "JSON object"),
        ("/predict/batch", b'{"rows": [{"user_id": "u1", "amount": 1, "merchant_category": 1, "device": 1}, {}]}',  # noqa: E501
         JSON, 422, "rows[1]"),
        ("/v2/models/fraud/infer", b'{"inputs": [{"name": "x", "shape": [2, 10], "datatype": "FP64", "data": [1]}]}',  # noqa: E501
         JSON, 400, "needs 20 values"),
        ("/v2/models/fraud/infer", b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}',  # noqa: E501
         JSON, 400, "BYTES"),
        ("/v2/models/fraud/infer", b'{"inputs": []}', JSON, 400, "non-empty"),
        ("/v2/models/fraud/infer", b'{"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [1]}]}',  # noqa: E501
         JSON, 400, "'merchant_category' is missing"),
        ("/v2/models/nope/infer", b'{"inputs": []}', JSON, 404, "no model named 'nope'"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_4xx_naming_the_problem(
    registered: str, store_url: str, path: str, body: bytes, headers: dict[str, str], status: int, needle: str
) -> None:
    with running(_settings(registered, store_url)) as base:
        r = httpx.post(base + path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_limits_auth_deadline_and_metrics(registered: str, store_url: str, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    settings = _settings(registered, store_url, token_file=tmp_path / "token", max_body_bytes=200,
                         max_batch_rows=2)  # fmt: skip
    body = {"user_id": "u000001", "amount": 5.0, "merchant_category": 1, "device": 1}
    with running(settings) as base:
        auth = {"authorization": "Bearer s3cret"}
        assert httpx.post(base + "/predict", json=body).status_code == 401
        assert (
            httpx.post(base + "/predict", json=body, headers={"authorization": "Bearer nope"}).status_code
            == 401
        )
        assert httpx.post(base + "/predict", json=body, headers=auth).status_code == 200
        assert httpx.get(base + "/readyz").status_code == 200  # probes need no token
        big = {**body, "pad": "x" * 500}
        assert httpx.post(base + "/predict", json=big, headers=auth).status_code == 413
        rows = {"rows": [body] * 3}
        r = httpx.post(base + "/predict/batch", content=json.dumps(rows)[:190], headers={**auth, **JSON})
        assert r.status_code in (400, 413)
        r = httpx.post(base + "/predict", json=body, headers={**auth, "x-deadline-ms": "0.001"})
        assert r.status_code == 504
        assert "deadline" in r.json()["error"]
        assert (
            httpx.post(base + "/predict", json=body, headers={**auth, "x-deadline-ms": "soon"}).status_code
            == 400
        )
        text = httpx.get(base + "/metrics").text
    assert 'fourfold_requests_total{route="predict",status="200"} 1.0' in text
    assert 'fourfold_requests_total{route="predict",status="401"} 2.0' in text
    assert 'fourfold_model_info{name="fraud",runtime="onnx",version="1"}' not in text  # not compiled
    assert 'fourfold_model_info{name="fraud",runtime="native",version="1"} 1.0' in text
    assert "fourfold_feature_fetch_seconds_count" in text
    assert "fourfold_batch_rows_bucket" in text


def test_concurrent_requests_are_batched_and_each_gets_its_own_score(registered: str, store_url: str) -> None:
    p = load_predictor(registered)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(FEATURES))) * 5
    settings = _settings(registered, store_url, cache_size=0, max_batch_wait_ms=50, deadline_ms=10_000)
    with running(settings) as base:

        def one(i: int) -> float:
            body = {
                "inputs": [
                    {"name": "x", "shape": [1, len(FEATURES)], "datatype": "FP64", "data": x[i].tolist()}
                ]
            }
            r = httpx.post(base + "/v2/models/fraud/infer", json=body, timeout=10)
            assert r.status_code == 200, r.text
            return float(r.json()["outputs"][0]["data"][0])

        with cf.ThreadPoolExecutor(16) as pool:
            scores = list(pool.map(one, range(len(x))))
        text = httpx.get(base + "/metrics").text
    np.testing.assert_allclose(scores, p.predict(x)["score"], atol=1e-6)
    count = next(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("fourfold_batch_rows_count")
    )
    total = next(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("fourfold_batch_rows_sum")
    )
    assert total == 200
    assert count < 200  # some requests shared a model call


def test_cache_hits_and_never_serves_another_versions_score(
    registered: str, store_url: str, fraud_package: Path
) -> None:
    body = {"user_id": "u000001", "amount": 12.0, "merchant_category": 2, "device": 0}
    with running(_settings(registered, store_url)) as base:
        first = httpx.post(base + "/predict", json=body).json()
        second = httpx.post(base + "/predict", json=body).json()
        assert first["score"] == second["score"]
        assert 'fourfold_cache_total{result="hit"} 1.0' in httpx.get(base + "/metrics").text
        LocalRegistry().register(fraud_package, name="fraud", aliases=["production"])
        assert httpx.post(base + "/admin/reload").json() == {
            "changed": True,
            "model": "fraud",
            "model_version": "2",
        }
        third = httpx.post(base + "/predict", json=body).json()
        text = httpx.get(base + "/metrics").text
    assert third["model_version"] == "2"
    assert 'fourfold_cache_total{result="miss"} 2.0' in text  # v2 never read v1's cached score
    assert 'fourfold_cache_total{result="hit"} 1.0' in text


def test_degraded_answers_from_defaults_when_the_store_is_slow(
    registered: str, fraud_package: Path, tmp_path: Path
) -> None:
    # a store URL whose reads cannot finish in time: a SQLite file locked by another writer would do; an
    # unreachable Redis port is the real-world case
    settings = _settings(
        registered, "redis://127.0.0.1:1/0?socket_connect_timeout=0.5", feature_timeout_ms=30
    )
    body = {"user_id": "u000001", "amount": 12.0, "merchant_category": 2, "device": 0}
    with running(settings) as base:
        r = httpx.post(base + "/predict", json=body)
        text = httpx.get(base + "/metrics").text
    assert r.status_code == 200, r.text
    assert r.json()["degraded"] is True
    assert "fourfold_degraded_total" in text
    assert math.isfinite(r.json()["score"])


def test_a_package_threshold_is_reported_as_the_decision(fraud_package: Path, store_url: str) -> None:
    from fourfold import load_package, save_model

    pkg = load_package(fraud_package)
    booster = pkg.load_native().booster  # type: ignore[attr-defined]
    target = fraud_package.parent / "thresholded"
    kw = {"signature": pkg.signature, "sample": pkg.sample(), "features": pkg.features()}
    path = save_model(booster, target, name="fraud", threshold=0.0, **kw).path
    LocalRegistry().register(path, name="fraud", aliases=["production"])
    body = {"user_id": "u000001", "amount": 12.0, "merchant_category": 2, "device": 0}
    with running(_settings("models:/fraud/production", store_url)) as base:
        out = httpx.post(base + "/predict", json=body).json()
    assert out["label"] == 1  # every score is above a 0.0 threshold
    assert out["decision"] == "positive"


def test_a_features_file_replaces_the_packages_definition(
    registered: str, fraud_log: pa.Table, tmp_path: Path
) -> None:
    """--features: the windows are materialized and read with the given definition (1h windows stretched
    to ten years here); a file that lacks one of the model's features is refused at load."""
    import fourfold.demo.features as demo_features
    from fourfold.errors import FourfoldError
    from fourfold.features import FeatureSet
    from fourfold.online.served import ModelHolder

    text = Path(demo_features.__file__).with_name("fraud_features.yaml").read_text()
    wide_file = tmp_path / "wide.yaml"
    wide_file.write_text(text.replace("window: 1h", "window: 3650d"))  # reaches the demo log from now
    wide = FeatureSet.load(wide_file)
    url = f"sqlite:///{tmp_path / 'wide.db'}"
    store = open_store(url)
    OnlineFeatures(wide, store).materialize(fraud_log.slice(0, 15_000))
    store.close()
    rows = fraud_log.slice(15_000, 30).to_pylist()
    with running(_settings(registered, url, cache_size=0, features=wide_file)) as base:
        now = int(time.time() * 1000)
        got = [httpx.post(base + "/predict", json=_request(r)).json() for r in rows]
    store = open_store(url)
    expected = OnlineFeatures(wide, store).get([r["user_id"] for r in rows], at_ms=now)
    store.close()
    p = load_predictor(registered)
    for r, g, f in zip(rows, got, expected, strict=True):
        assert f is not None
        assert g["degraded"] is False
        want = p.predict_one({**f, **{k: r[k] for k in ("amount", "merchant_category", "device")}})
        assert g["score"] == pytest.approx(float(want["score"]), abs=1e-6)  # type: ignore[arg-type]
    narrow = OnlineFeatures(FRAUD_FEATURES, open_store("memory://"))
    narrow.materialize(fraud_log.slice(0, 15_000))
    assert expected != narrow.get([r["user_id"] for r in rows], at_ms=now)  # the definitions differ here

    short = tmp_path / "short.yaml"
    short.write_text(
        text.replace("  - {name: txn_count_1h, source: transactions, agg: count, window: 1h}\n", "")
    )
    with pytest.raises(FourfoldError, match="does not define 'txn_count_1h'") as err:
        ModelHolder(_settings(registered, url, features=short)).load()
    assert err.value.status == 400
