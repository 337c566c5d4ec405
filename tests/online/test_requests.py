"""What a client may send the server, and what it gets back when it sends something else: the fields a
request carries (never one the server computes), booleans and ids of the wrong type, unknown entities,
and budgets that grow with the rows asked for."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from fourfold import LocalRegistry, load_package, load_predictor, save_model
from fourfold.demo.features import FRAUD_FEATURES
from fourfold.features import FeatureSet
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import open_store
from fourfold.online.settings import ServeSettings
from serving import running

BODY = {"user_id": "u000001", "amount": 12.0, "merchant_category": 2, "device": 0}


def _settings(model: str, store: str, **kw: Any) -> ServeSettings:
    return ServeSettings(model=model, store=store, reload_interval_s=0, access_log=False, **kw)


def test_a_client_cannot_steer_the_score_with_a_computed_feature(
    registered: str, store_url: str, fraud_log: pa.Table, as_of: int
) -> None:
    """/predict once let a client send txn_count_10m and override the stored window (0.0228 -> 0.0040)."""
    user = next(r["user_id"] for r in fraud_log.slice(14_000, 1000).to_pylist())
    body = {**BODY, "user_id": user}
    with running(_settings(registered, store_url, cache_size=0), clock=lambda: as_of) as base:
        honest = httpx.post(base + "/predict", json=body)
        for field in ("txn_count_10m", "amount_mean_7d", "last_amount_1h"):
            steered = httpx.post(base + "/predict", json={**body, field: 0})
            assert steered.status_code == 422, steered.text
            assert repr(field) in steered.json()["error"]
            assert "fourfold computes" in steered.json()["error"]
        batch = httpx.post(base + "/predict/batch", json={"rows": [body, {**body, "txn_count_1h": 99}]})
    assert honest.status_code == 200
    assert batch.status_code == 422
    assert batch.json()["error"].startswith("rows[1]")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"device": False}, "feature 'device' must be a number, got bool False"),
        ({"amount": True}, "feature 'amount' must be a number, got bool True"),
        ({"amount": "12"}, "feature 'amount' must be a number, got str '12'"),
        ({"amount": [1]}, "feature 'amount' must be a number, got list"),
        ({"amount": {"v": 1}}, "feature 'amount' must be a number, got dict"),
        ({"user_id": 42}, "field 'user_id' (the entity id) must be a non-empty string, got int 42"),
        ({"user_id": ""}, "must be a non-empty string"),
        ({"user_id": None}, "must be a non-empty string, got missing"),
        ({"user_id": ["u1"]}, "must be a non-empty string, got list"),
        ({"amount": None}, "feature 'amount' is null or NaN"),
        ({"amount": 1.5e308, "device": 1}, None),  # a finite double is a number
        ({"ammount": 3.0}, "unknown field(s) 'ammount'"),
        ({"event_id": 7}, "unknown field(s) 'event_id'"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_in_every_slot_is_a_422_naming_it(
    registered: str, store_url: str, change: dict[str, Any], needle: str | None
) -> None:
    with running(_settings(registered, store_url)) as base:
        r = httpx.post(base + "/predict", json={**BODY, **change})
    if needle is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]


def test_a_missing_field_lists_only_what_the_client_sends(registered: str, store_url: str) -> None:
    with running(_settings(registered, store_url)) as base:
        r = httpx.post(base + "/predict", json={"user_id": "u1", "merchant_category": 1, "device": 1})
    assert r.status_code == 422
    error = r.json()["error"]
    assert "field 'amount' is missing from the request; send: user_id, amount, merchant_category, device" in (
        error
    )
    assert "txn_count" not in error  # a windowed feature is not the client's to send


def test_an_unknown_entity_says_so_and_is_counted(registered: str, store_url: str) -> None:
    with running(_settings(registered, store_url)) as base:
        known = httpx.post(base + "/predict", json=BODY).json()
        unknown = httpx.post(base + "/predict", json={**BODY, "user_id": "nobody"}).json()
        batch = httpx.post(base + "/predict/batch", json={"rows": [BODY, {**BODY, "user_id": "nobody"}]})
        text = httpx.get(base + "/metrics").text
    assert known["entity_found"] is True
    assert unknown["entity_found"] is False
    assert unknown["degraded"] is False  # the store answered: it knows nothing of this entity
    assert [p["entity_found"] for p in batch.json()["predictions"]] == [True, False]
    assert "fourfold_unknown_entities_total 2.0" in text


def test_a_feature_set_may_refuse_unknown_entities_with_404(
    fraud_package: Path, fraud_log: pa.Table, tmp_path: Path
) -> None:
    strict = FeatureSet.from_dict(FRAUD_FEATURES.to_dict() | {"unknown_entity": "reject"})
    pkg = load_package(fraud_package)
    path = save_model(pkg.load_native().booster, tmp_path / "strict", name="fraud",  # type: ignore[attr-defined]
                      signature=pkg.signature, sample=pkg.sample(), features=strict).path  # fmt: skip
    LocalRegistry().register(path, name="fraud", aliases=["production"])
    url = f"sqlite:///{tmp_path / 'f.db'}"
    with closing(open_store(url)) as store:
        OnlineFeatures(strict, store).materialize(fraud_log.slice(0, 5000))
    with running(_settings("models:/fraud/production", url)) as base:
        assert httpx.post(base + "/predict", json=BODY).status_code == 200
        r = httpx.post(base + "/predict", json={**BODY, "user_id": "nobody"})
        b = httpx.post(base + "/predict/batch", json={"rows": [BODY, {**BODY, "user_id": "nobody"}]})
    assert r.status_code == 404
    assert "'nobody'" in r.json()["error"]
    assert "unknown_entity: reject" in r.json()["error"]
    assert b.status_code == 404


def test_batch_budgets_grow_with_the_rows(registered: str, store_url: str, fraud_log: pa.Table) -> None:
    """At the documented 10,000-row limit /predict/batch always hit the 100 ms deadline (504), and at 2,000
    rows the 40 ms feature budget expired and rows were scored on defaults."""
    users = [r["user_id"] for r in fraud_log.slice(0, 15_000).to_pylist()]
    rows = [{**BODY, "user_id": users[i % len(users)]} for i in range(10_000)]
    with running(_settings(registered, store_url, max_body_bytes=5_000_000)) as base:
        for n in (2_000, 10_000):
            r = httpx.post(base + "/predict/batch", json={"rows": rows[:n]}, timeout=60)
            assert r.status_code == 200, r.text[:300]
            assert r.json()["degraded"] is False
            assert len(r.json()["predictions"]) == n
        over = httpx.post(base + "/predict/batch", json={"rows": rows + rows[:1]}, timeout=60)
        own = httpx.post(base + "/predict/batch", json={"rows": rows}, headers={"x-deadline-ms": "1"})
    assert over.status_code == 413
    assert own.status_code == 504  # a client's own deadline is kept as given
    assert "deadline of 1 ms" in own.json()["error"]


def test_batch_rejections_list_every_bad_row_with_its_reason(registered: str, store_url: str) -> None:
    rows = [BODY, {**BODY, "amount": None}, BODY, {**BODY, "device": True}]
    with running(_settings(registered, store_url)) as base:
        r = httpx.post(base + "/predict/batch", json={"rows": rows})
        extra = httpx.post(base + "/predict/batch", json={"rows": [BODY], "limit": 3})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "rows[1]: feature 'amount' is null or NaN (2 of 4 rows rejected)"
    assert body["rejected"] == [
        {"row": 1, "reason": "feature 'amount' is null or NaN"},
        {"row": 3, "reason": "feature 'device' must be a number, got bool True"},
    ]
    assert extra.status_code == 422
    assert "'limit'" in extra.json()["error"]


def test_the_openapi_document_states_the_bounds_the_server_enforces(registered: str, store_url: str) -> None:
    import fourfold

    pkg = load_package(load_predictor(registered).package.path)
    fourfold.compile_model(pkg)  # ONNX (float32) serves it now: values beyond float32 are refused
    with running(_settings(str(pkg.path), store_url)) as base:
        doc = httpx.get(base + "/openapi.json").json()
        limit = 2.0**128 - 2.0**103
        below = httpx.post(base + "/predict", json={**BODY, "amount": 3.4028235677973362e38})
        at = httpx.post(base + "/predict", json={**BODY, "amount": limit})
    row = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert row["additionalProperties"] is False
    assert row["required"] == ["user_id", "amount", "merchant_category", "device"]
    assert set(row["properties"]) == {"user_id", "amount", "merchant_category", "device"}
    # the bound is where a JSON number's rounding to a double reaches the limit: half a double's step below
    edge = 2**128 - 2**103 - 2**74
    bounds = {"type": "number", "exclusiveMinimum": -edge, "exclusiveMaximum": edge}
    assert row["properties"]["amount"] == bounds
    assert below.status_code == 200, below.text
    assert at.status_code == 422
    assert "beyond the float32 range" in at.json()["error"]


def test_a_clock_reads_windows_as_of_its_time(registered: str, store_url: str, as_of: int) -> None:
    """The server's windows are read as of its clock: a month later every window is empty."""
    with running(_settings(registered, store_url, cache_size=0), clock=lambda: as_of) as base:
        then = httpx.post(base + "/predict", json=BODY).json()
    month = 30 * 86_400_000
    with running(_settings(registered, store_url, cache_size=0), clock=lambda: as_of + month) as base:
        later = httpx.post(base + "/predict", json=BODY).json()
    with closing(open_store(store_url)) as store:
        online = OnlineFeatures(FRAUD_FEATURES, store)
        f_then, f_later = (
            online.get(["u000001"], at_ms=as_of)[0],
            online.get(["u000001"], at_ms=as_of + month)[0],
        )
    assert f_then is not None
    assert f_later is not None
    assert f_later["amount_mean_7d"] != f_later["amount_mean_7d"]  # NaN: nothing in the last 7 days
    p = load_predictor(registered)
    fields = {k: BODY[k] for k in ("amount", "merchant_category", "device")}
    assert then["score"] == p.predict_one({**f_then, **fields})["score"]
    assert later["score"] == p.predict_one({**f_later, **fields})["score"]
