"""The seed's hybrids end to end, each through the parts a user runs.

* Batch + Online: a nightly ``fourfold batch`` writes a churn model's scores into the online store as
  entity features; ``fourfold serve`` of a second model reads them in ``/predict``.
* Streaming + Online and Embedded + Online are tested where they live: ``tests/stream`` (the store
  ``/predict`` reads holds the stream's windows within a checkpoint), ``tests/edge/test_cascade.py``
  and ``tests/test_one_path.py`` (the cascade against a real server).
* ``docs/hybrids.md``'s script, all three on the demo model, runs as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FEATURES, build
from fourfold import Predictor, load_package, save_model
from fourfold.batch import run_batch
from fourfold.features import FeatureSet
from fourfold.online.settings import ServeSettings
from serving import running

REQUEST = FEATURES[:4]


def _definitions(features: list[dict[str, Any]]) -> FeatureSet:
    return FeatureSet.from_dict({
        "name": "accounts", "entities": [{"name": "user", "join_key": "user_id"}],
        "sources": [{"name": "tx", "entity": "user"}], "features": features,
    })  # fmt: skip


def test_batch_writes_entity_features_that_predict_reads(tmp_path: Path) -> None:
    import xgboost as xgb

    churn, _, table = build("xgboost")  # the nightly model: scores each user from their x0..x4
    nightly = save_model(churn, tmp_path / "churn", name="churn", sample=table,
                         features=_definitions([{"name": f, "request": f} for f in FEATURES]))  # fmt: skip
    rng = np.random.default_rng(5)
    users = pa.table({"user_id": [f"u{i:04d}" for i in range(40)],
                      **{f: rng.standard_normal(40) for f in FEATURES}})  # fmt: skip
    pq.write_table(users, tmp_path / "users.parquet")
    store = f"sqlite:///{tmp_path / 'features.db'}"
    run_batch(model=str(nightly.path), input=str(tmp_path / "users.parquet"), output=store,
              id_cols=("user_id",), partition="date=2025-04-15")  # fmt: skip
    nightly_scores = dict(zip(users["user_id"].to_pylist(),
                              Predictor(nightly).predict(users)["score"].tolist(), strict=True))  # fmt: skip

    # the online model: the request's x0..x3 and the nightly churn score of the user
    x = rng.standard_normal((2000, 5))
    y = (x[:, 0] + 2 * x[:, 4] > 0.3).astype(int)
    ranker = xgb.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1).fit(x, y)
    names = [*REQUEST, "score"]
    sample = pa.table({n: x[:256, j] for j, n in enumerate(names)})
    defs = _definitions([*({"name": f, "request": f} for f in REQUEST), {"name": "score", "entity": "user"}])
    online = save_model(ranker, tmp_path / "ranker", name="ranker", sample=sample, features=defs)
    predictor = Predictor(load_package(online.path))
    settings = ServeSettings(model=str(online.path), store=store, access_log=False, cache_size=0)
    with running(settings) as base:
        for user in ("u0003", "u0017", "u0039"):
            request = {
                "user_id": user,
                **{f: float(v) for f, v in zip(REQUEST, rng.standard_normal(4), strict=True)},
            }
            answer = httpx.post(base + "/predict", json=request)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["entity_found"] is True
            row = {**{f: request[f] for f in REQUEST}, "score": nightly_scores[user]}
            assert body["score"] == pytest.approx(predictor.predict_one(row)["score"], abs=1e-6)
        unknown = httpx.post(base + "/predict", json={"user_id": "nobody", **dict.fromkeys(REQUEST, 0.0)})
        # a user the nightly job never scored: no default for the score, which the model needs
        assert unknown.status_code == 422, unknown.text
        assert "'score'" in unknown.json()["error"]
        sent = httpx.post(
            base + "/predict", json={"user_id": "u0003", **dict.fromkeys(REQUEST, 0.0), "score": 1.0}
        )
        assert sent.status_code == 422  # a computed feature the caller may not send
        assert "score" in sent.json()["error"]


def test_the_hybrids_page_runs_as_written(tmp_path: Path) -> None:
    """docs/hybrids.md's script, run with bash from an empty directory: the stream's windows reach
    /predict, the nightly scores are read back from their store, the cascade gets the server's answer."""
    import json
    import os
    import re
    import subprocess
    import sys

    from serving import free_port

    page = (Path(__file__).resolve().parents[1] / "docs" / "hybrids.md").read_text()
    [script] = re.findall(r"^```bash\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "EVENTS": "20000", "PORT": str(free_port()), "FOURFOLD_HOME": str(tmp_path / "home"),
           "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    env.pop("FOURFOLD_STORE", None)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    before, after = (
        json.loads((tmp_path / f).read_text())["features"] for f in ("before.json", "after.json")
    )
    assert after["txn_count_1h"] == before["txn_count_1h"] + 5
    assert after["txn_count_10m"] == before["txn_count_10m"] + 5
    decisions = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [d["event_id"] for d in decisions] == [f"new-{i}" for i in range(5)]
    predicted = json.loads((tmp_path / "predict.json").read_text())
    assert predicted["entity_found"] is True
    nightly = json.loads((tmp_path / "nightly.json").read_text())
    assert 0.0 <= nightly["score"] <= 1.0
    cascade = json.loads((tmp_path / "cascade.json").read_text())
    assert cascade["source"] == "server"
    assert cascade["score"] == predicted["score"]
