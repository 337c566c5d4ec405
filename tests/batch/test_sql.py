"""SQL inputs: a query on a real PostgreSQL (ADBC) or a DuckDB file, spooled once into parquet fragments."""

from __future__ import annotations

import json
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
from fourfold.batch import JobFailed, run_batch
from fourfold.batch.sql import spool_query
from postgres import PG
from serving import free_port

PG_URL = postgres.url()


def users(n: int, *, bad_every: int = 0, seed: int = 0) -> pa.Table:
    """``user_id`` + the model's features; every ``bad_every``-th row has a NULL ``x1`` (rejected)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {"user_id": [f"u{i:05d}" for i in range(n)]}
    for f in FEATURES:
        cols[f] = rng.standard_normal(n)
    t = pa.table(cols)
    if bad_every:
        x1 = t["x1"].to_pylist()
        for i in range(0, n, bad_every):
            x1[i] = None
        t = t.set_column(t.schema.get_field_index("x1"), "x1", pa.array(x1, pa.float64()))
    return t


def read_out(dest: Path) -> pa.Table:
    return pq.read_table(sorted(dest.glob("part-*.parquet"))).sort_by("user_id")


def assert_scores(out: pa.Table, source: pa.Table, model_uri: str) -> None:
    """``out``'s scores are the predictor's on the same rows (by id), every good row scored once."""
    good = source.filter(pc.is_valid(source["x1"])).sort_by("user_id")
    assert out["user_id"].to_pylist() == good["user_id"].to_pylist()
    expected = load_predictor(model_uri).predict(good)["score"]
    np.testing.assert_allclose(out["score"].to_numpy(), expected, atol=1e-6)


# -- PostgreSQL ----------------------------------------------------------------------------------------------
def test_postgres_query_to_parquet_scores_equal_the_predictor(pg: PG, model_uri: str, tmp_path: Path) -> None:
    name = pg.table()
    data = users(1000, bad_every=100)
    pg.load(name, data)
    query = f'SELECT * FROM "{name}" WHERE user_id < $$u00900$$'
    summary = run_batch(model=model_uri, input=PG_URL, query=query, output=str(tmp_path / "out"),
                        id_cols=("user_id",), partition="date=2025-04-15", batch_rows=25)  # fmt: skip
    # 900 rows spooled in files of batch_rows * 16 = 400 rows: 3 fragments
    assert (summary.fragments, summary.rows_in, summary.rejected) == (3, 900, 9)
    dest = tmp_path / "out" / "date=2025-04-15"
    assert_scores(read_out(dest), data.slice(0, 900), model_uri)
    bad = pq.read_table(sorted((dest / "_quarantine").glob("*.parquet")))
    assert set(bad["_reason"].to_pylist()) == {"feature 'x1' is null or NaN"}
    assert not (dest / "_input").exists()  # the spool is bookkeeping: not published


def test_a_resumed_job_scores_the_spooled_result_without_querying_again(
    pg: PG, model_uri: str, tmp_path: Path
) -> None:
    name = pg.table()
    data = users(600, bad_every=50)
    pg.load(name, data)
    kw: dict[str, Any] = {"model": model_uri, "input": PG_URL, "query": f'SELECT * FROM "{name}"',
                          "output": str(tmp_path / "out"), "id_cols": ("user_id",),
                          "batch_rows": 25}  # fmt: skip
    with pytest.raises(JobFailed):  # scored and spooled, but not committed
        run_batch(**kw, max_rejected=0)
    assert (tmp_path / ".staging-out" / "_input" / "_COMPLETE").exists()
    pg.sql(f'DROP TABLE "{name}"')  # any new query would now fail
    with pytest.raises(FourfoldError, match="does not exist"):
        run_batch(**{**kw, "output": str(tmp_path / "other")})
    summary = run_batch(**kw, resume=True)
    assert (summary.fragments, summary.resumed, summary.rows_in) == (2, 2, 600)
    assert_scores(read_out(tmp_path / "out"), data, model_uri)


def test_spool_files_types_empty_results_and_the_complete_marker(pg: PG, tmp_path: Path) -> None:
    name = pg.table()
    pg.sql(f'CREATE TABLE "{name}" (id int, price numeric(10, 2), ratio numeric, big numeric(50, 4))')
    pg.sql(f"""INSERT INTO "{name}" SELECT g, g * 1.25, g / 3.0, g FROM generate_series(1, 10) g""")
    pg.sql(f"""INSERT INTO "{name}" VALUES (11, 'NaN', 'NaN', 'NaN')""")
    spool = tmp_path / "spool"
    files = spool_query(PG_URL, f'SELECT * FROM "{name}" ORDER BY id', spool, rows_per_file=4)
    assert [f.name for f in files] == ["frag-00000.parquet", "frag-00001.parquet", "frag-00002.parquet"]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [4, 4, 3]
    assert not list(spool.glob("*.tmp"))
    t = pq.read_table(files)
    assert t.schema.field("price").type == pa.decimal128(10, 2)
    assert t.schema.field("ratio").type == pa.decimal128(38, 18)  # unconstrained: rounded to 18 places
    assert t.schema.field("big").type == pa.decimal256(50, 4)
    assert str(t["price"][1].as_py()) == "2.50"
    assert str(t["ratio"][0].as_py()) == "0.333333333333333333"
    assert t["price"][10].as_py() is None  # NaN: null, so the row is rejected like any missing value
    marker = json.loads((spool / "_COMPLETE").read_text())
    assert (marker["rows"], marker["files"]) == (11, [f.name for f in files])

    pg.sql(f'DROP TABLE "{name}"')
    assert spool_query(PG_URL, "SELECT 1/0", spool, rows_per_file=4) == files  # resumed: not run again

    empty = spool_query(
        PG_URL, "SELECT 1::int AS a, 'x'::text AS b WHERE false", tmp_path / "e", rows_per_file=4
    )
    assert len(empty) == 1
    assert pq.read_table(empty[0]).schema.names == ["a", "b"]
    assert pq.read_table(empty[0]).num_rows == 0


def test_sql_errors_name_the_database_with_a_status_and_no_password(pg: PG, tmp_path: Path) -> None:
    with pytest.raises(FourfoldError, match=r"syntax error at or near \"SELEC\"") as err:
        spool_query(PG_URL, "SELEC 1", tmp_path / "a", rows_per_file=10)
    assert err.value.status == 422
    assert PG_URL.split("@")[-1] in err.value.message
    with pytest.raises(FourfoldError, match="division by zero") as err:
        spool_query(PG_URL, "SELECT 1/0", tmp_path / "b", rows_per_file=10)
    assert err.value.status == 422
    closed = f"postgresql://ff:s3cret@127.0.0.1:{free_port()}/test"
    with pytest.raises(FourfoldError, match=r"cannot connect to postgresql://ff:\*\*\*@127\.0\.0\.1") as err:
        spool_query(closed, "SELECT 1", tmp_path / "c", rows_per_file=10)
    assert err.value.status == 503
    assert "s3cret" not in err.value.message
    assert not (tmp_path / "c" / "_COMPLETE").exists()


def test_a_job_on_an_unreachable_database_fails_with_503(model_uri: str, tmp_path: Path) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    with pytest.raises(FourfoldError, match="Connection refused") as err:
        run_batch(model=model_uri, input=closed, query="SELECT * FROM users", output=str(tmp_path / "out"))
    assert err.value.status == 503
    with pytest.raises(FourfoldError, match="needs --query") as err:
        run_batch(model=model_uri, input=PG_URL, output=str(tmp_path / "out"))
    assert err.value.status == 400


# -- DuckDB --------------------------------------------------------------------------------------------------
@pytest.fixture
def duck(tmp_path: Path) -> tuple[str, pa.Table]:
    import duckdb

    data = users(700, bad_every=70, seed=1)
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    try:
        con.register("data", data)
        con.execute("CREATE TABLE users AS SELECT * FROM data")
    finally:
        con.close()
    return f"duckdb://{path}", data


def test_duckdb_query_to_parquet(duck: tuple[str, pa.Table], model_uri: str, tmp_path: Path) -> None:
    url, data = duck
    summary = run_batch(model=model_uri, input=url, query="SELECT * FROM users", output=str(tmp_path / "out"),
                        id_cols=("user_id",), batch_rows=20)  # fmt: skip
    assert (summary.fragments, summary.rows_in, summary.rejected) == (3, 700, 10)
    assert_scores(read_out(tmp_path / "out"), data, model_uri)


def test_duckdb_errors(duck: tuple[str, pa.Table], tmp_path: Path) -> None:
    url, _ = duck
    with pytest.raises(FourfoldError, match="Catalog Error: Table with name nope does not exist") as err:
        spool_query(url, "SELECT * FROM nope", tmp_path / "a", rows_per_file=10)
    assert err.value.status == 422
    with pytest.raises(FourfoldError, match="does not exist") as err:
        spool_query(f"duckdb://{tmp_path}/missing.duckdb", "SELECT 1", tmp_path / "b", rows_per_file=10)
    assert err.value.status == 400
    assert not (tmp_path / "missing.duckdb").exists()  # opened read-only: never created
    files = spool_query(
        "duckdb://:memory:", "SELECT range AS i FROM range(5)", tmp_path / "c", rows_per_file=2
    )
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [2, 2, 1]


def test_decimal_features_are_scored(model_uri: str, tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "d.duckdb"
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE t AS SELECT 'u' || range AS user_id, " + ", ".join(
            f"(random() - 0.5)::DECIMAL(12, 6) AS {f}" for f in FEATURES) + " FROM range(50)")  # fmt: skip
    finally:
        con.close()
    out = tmp_path / "out"
    run_batch(model=model_uri, input=f"duckdb://{path}", query="SELECT * FROM t", output=str(out),
              id_cols=("user_id",))  # fmt: skip
    source = spool_query(f"duckdb://{path}", "SELECT * FROM t", tmp_path / "s", rows_per_file=100)
    as_float = pq.read_table(source).cast(
        pa.schema([pa.field("user_id", pa.string()), *(pa.field(f, pa.float64()) for f in FEATURES)])
    )
    assert_scores(read_out(out), as_float, model_uri)
