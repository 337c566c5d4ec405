"""Database and store sinks: a real PostgreSQL table (one transaction per partition), and the online
feature store (a real Redis, the default SQLite file)."""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import postgres
from conftest import FEATURES
from fourfold import FourfoldError, load_predictor
from fourfold.batch import run_batch
from fourfold.features.stores import open_store
from fourfold.settings import Settings
from postgres import PG
from serving import free_port, redis_server

PG_URL = postgres.url()
DAY = "date=2025-04-15"


def write_users(path: Path, n: int, *, bad_every: int = 0, seed: int = 0) -> pa.Table:
    """``n`` users (``user_id`` + features) as one parquet file; every ``bad_every``-th ``x1`` is NaN."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(FEATURES)))
    if bad_every:
        x[::bad_every, 1] = np.nan
    t = pa.table({"user_id": [f"u{i:05d}" for i in range(n)], **{f: x[:, j] for j, f in enumerate(FEATURES)}})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)
    return t


def expected_scores(model_uri: str, data: pa.Table) -> dict[str, float]:
    good = data.filter(pc.is_finite(data["x1"]))
    scores = load_predictor(model_uri).predict(good)["score"]
    return dict(zip(good["user_id"].to_pylist(), scores.tolist(), strict=True))


# -- PostgreSQL ----------------------------------------------------------------------------------------------
def test_parquet_to_postgres_scores_equal_the_predictor(pg: PG, model_uri: str, tmp_path: Path) -> None:
    name = pg.table()
    data = write_users(tmp_path / "in" / "a.parquet", 500, bad_every=50)
    summary = run_batch(model=model_uri, input=str(tmp_path / "in"), output=PG_URL, table=name,
                        id_cols=("user_id",), partition=DAY, quarantine=str(tmp_path / "q"))  # fmt: skip
    assert summary.output == f"postgresql://127.0.0.1:5432/test table={name} {DAY}"
    assert (summary.rows_out, summary.rejected) == (490, 10)
    out = pg.read(name)
    assert out.column_names == ["user_id", "score", "label", "model_version", "date"]
    assert out.schema.field("score").type == pa.float64()
    assert set(out["date"].to_pylist()) == {"2025-04-15"}
    got = dict(zip(out["user_id"].to_pylist(), out["score"].to_pylist(), strict=True))
    want = expected_scores(model_uri, data)
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), atol=1e-6)
    bad = pq.read_table(sorted((tmp_path / "q" / DAY).glob("*.parquet")))
    assert bad.num_rows == 10
    assert set(bad["_reason"].to_pylist()) == {"feature 'x1' is null or NaN"}
    assert not list((Settings().home / "batch").glob("staging-*"))  # committed: staging removed


def test_rerunning_a_partition_replaces_only_that_partition(pg: PG, model_uri: str, tmp_path: Path) -> None:
    name = pg.table()
    write_users(tmp_path / "a" / "a.parquet", 300)
    write_users(tmp_path / "b" / "b.parquet", 200, seed=1)
    kw: dict[str, Any] = {"model": model_uri, "output": PG_URL, "table": name, "id_cols": ("user_id",)}
    run_batch(**kw, input=str(tmp_path / "a"), partition="date=2025-04-14")
    run_batch(**kw, input=str(tmp_path / "a"), partition=DAY)
    before = pg.read(name).filter(pc.equal(pg.read(name)["date"], "2025-04-14"))
    run_batch(**kw, input=str(tmp_path / "b"), partition=DAY)  # a re-run with other rows
    run_batch(**kw, input=str(tmp_path / "b"), partition=DAY)  # and once more: idempotent
    counts = dict(pg.sql(f'SELECT date, count(*) FROM "{name}" GROUP BY date'))
    assert counts == {"2025-04-14": 300, "2025-04-15": 200}
    assert pg.sql(f'SELECT count(DISTINCT (date, user_id)) FROM "{name}"') == [(500,)]
    after = pg.read(name)
    assert after.filter(pc.equal(after["date"], "2025-04-14")).equals(before)

    run_batch(**{**kw, "table": name}, input=str(tmp_path / "a"))  # no partition: the whole table
    assert pg.sql(f'SELECT count(*) FROM "{name}"') == [(300,)]


def test_a_failing_commit_leaves_the_table_as_it_was(pg: PG, model_uri: str, tmp_path: Path) -> None:
    name = pg.table()
    write_users(tmp_path / "in" / "a.parquet", 300)
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"), "output": PG_URL, "table": name,
                          "id_cols": ("user_id",), "partition": DAY}  # fmt: skip
    run_batch(**kw)
    pg.sql(f'ALTER TABLE "{name}" ALTER COLUMN score TYPE int4')  # the COPY of doubles will fail
    before = pg.read(name)
    with pytest.raises(FourfoldError, match=f"writing table '{name}' on {PG_URL}.*rolled back") as err:
        run_batch(**kw)
    assert err.value.status == 503
    assert pg.read(name).equals(before)  # the DELETE of the partition was rolled back too

    pg.sql(f'ALTER TABLE "{name}" ALTER COLUMN score TYPE float8 USING score::float8')
    summary = run_batch(**kw, resume=True)  # the staged parts are kept: commit without scoring again
    assert summary.resumed == summary.fragments == 1
    assert pg.sql(f'SELECT count(*) FROM "{name}"') == [(300,)]


def test_postgres_sink_arguments_are_checked_before_scoring(model_uri: str, tmp_path: Path) -> None:
    write_users(tmp_path / "in" / "a.parquet", 10)
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"), "id_cols": ("user_id",)}
    with pytest.raises(FourfoldError, match="needs --table") as err:
        run_batch(**kw, output=PG_URL)
    assert err.value.status == 400
    with pytest.raises(FourfoldError, match="is not a table name") as err:
        run_batch(**kw, output=PG_URL, table='scores"; DROP TABLE users; --')
    assert err.value.status == 400
    closed = f"postgresql://ff:s3cret@127.0.0.1:{free_port()}/test"
    with pytest.raises(FourfoldError, match="Connection refused") as err:
        run_batch(**kw, output=closed, table="scores")
    assert err.value.status == 503
    assert "s3cret" not in err.value.message
    assert not list((Settings().home / "batch").glob("staging-*/part-*"))  # nothing was scored


# -- the online feature store --------------------------------------------------------------------------------
def test_store_sink_writes_each_entity_s_scores_to_redis(model_uri: str, tmp_path: Path) -> None:
    data = write_users(tmp_path / "in" / "a.parquet", 400, bad_every=40)
    want = expected_scores(model_uri, data)
    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        summary = run_batch(model=model_uri, input=str(tmp_path / "in"), output=url, id_cols=("user_id",),
                            partition=DAY, batch_rows=64)  # fmt: skip
        assert summary.output == f"{url} namespace=churn__entities"
        with closing(open_store(url)) as store:
            ids = [*want, "u00000"]  # u00000 was rejected (NaN x1): never written
            records = store.read("churn__entities", ids, ["score", "label", "model_version"])
    assert records[-1] is None
    midnight = int(dt.datetime(2025, 4, 15, tzinfo=dt.UTC).timestamp() * 1000)
    for uid, record in zip(want, records, strict=False):
        assert record is not None
        assert record.values["score"] == pytest.approx(want[uid], abs=1e-6)
        assert set(record.values) == {"score", "label"}  # outputs only: no ids, no model_version
        assert record.event_time_ms == midnight
    assert (Settings().home / "quarantine").exists()


def test_store_sink_nights_are_idempotent_and_never_go_back_in_time(model_uri: str, tmp_path: Path) -> None:
    url = Settings().store_url  # the default store: SQLite in FOURFOLD_HOME
    old = write_users(tmp_path / "old" / "a.parquet", 100, seed=1)
    new = write_users(tmp_path / "new" / "a.parquet", 100, seed=2)
    kw: dict[str, Any] = {"model": model_uri, "output": url, "id_cols": ("user_id",), "table": "nightly"}

    def scores() -> list[float]:
        with closing(open_store(url)) as store:
            records = store.read("nightly", [f"u{i:05d}" for i in range(100)], ["score"])
        return [float(r.values["score"]) for r in records if r is not None]

    run_batch(**kw, input=str(tmp_path / "new"), partition="date=2025-04-15")
    np.testing.assert_allclose(scores(), list(expected_scores(model_uri, new).values()), atol=1e-6)
    run_batch(**kw, input=str(tmp_path / "new"), partition="date=2025-04-15")  # same night again
    np.testing.assert_allclose(scores(), list(expected_scores(model_uri, new).values()), atol=1e-6)
    run_batch(**kw, input=str(tmp_path / "old"), partition="date=2025-04-14")  # late older night: stale
    np.testing.assert_allclose(scores(), list(expected_scores(model_uri, new).values()), atol=1e-6)
    run_batch(**kw, input=str(tmp_path / "old"))  # no date: now, newer than any night
    np.testing.assert_allclose(scores(), list(expected_scores(model_uri, old).values()), atol=1e-6)


def test_store_sink_arguments_are_checked(model_uri: str, tmp_path: Path) -> None:
    write_users(tmp_path / "in" / "a.parquet", 10)
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"), "output": Settings().store_url}
    with pytest.raises(FourfoldError, match="needs --id-cols") as err:
        run_batch(**kw)
    assert err.value.status == 400
    with pytest.raises(FourfoldError, match="not a date") as err:
        run_batch(**kw, id_cols=("user_id",), partition="date=yesterday")
    assert err.value.status == 400
    with pytest.raises(FourfoldError, match="unavailable") as err:
        run_batch(**{**kw, "output": f"redis://127.0.0.1:{free_port()}/0"}, id_cols=("user_id",))
    assert err.value.status == 503


def test_store_sink_writes_into_the_feature_sets_entity_namespace(tmp_path: Path) -> None:
    """Batch + Online: the namespace is the feature set's (where its online side reads entity features),
    not the model's name - one rule, in FeatureSet.entity_namespace."""
    from conftest import build
    from fourfold import save_model
    from fourfold.features import FeatureSet
    from fourfold.features.online import OnlineFeatures

    def definitions(extra: list[dict[str, Any]]) -> FeatureSet:
        return FeatureSet.from_dict({
            "name": "accounts", "entities": [{"name": "user", "join_key": "user_id"}],
            "sources": [{"name": "tx", "entity": "user"}],
            "features": [*({"name": f, "request": f} for f in FEATURES), *extra],
        })  # fmt: skip

    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "m", name="churn", sample=table, features=definitions([]))
    data = write_users(tmp_path / "in" / "a.parquet", 50)
    url = f"sqlite:///{tmp_path / 'features.db'}"
    summary = run_batch(model=str(pkg.path), input=str(tmp_path / "in"), output=url, id_cols=("user_id",),
                        partition=DAY)  # fmt: skip
    assert summary.output.endswith("namespace=accounts__entities")
    reader = definitions([{"name": "score", "entity": "user"}])
    with closing(open_store(url)) as store:
        got = OnlineFeatures(reader, store).get(["u00003"])[0]
    assert got is not None
    assert got["score"] == pytest.approx(expected_scores(str(pkg.path), data)["u00003"], abs=1e-12)
