"""The Spark engine on a real ``local[2]`` Spark (one session for the module): the scores the predictor
gives, the local engine's reasons and quarantine, typed output, exactly-once re-runs and the CLI."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import FEATURES
from fourfold import load_predictor
from fourfold.batch import JobFailed, run_batch
from fourfold.batch.spark import reason_column, spark_session
from fourfold.cli.main import app
from fourfold.model.check import F32_OVERFLOW, RowCheck
from fourfold.model.package import MANIFEST, sha256_file
from fourfold.model.signature import Feature, Signature
from fourfold.registry.resolve import resolve

ROWS_PER_FILE = 300
SPARK: dict[str, Any] = {"engine": "spark", "spark_master": "local[2]"}


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local[2] session for every test here, made by the engine's own helper; the engine reuses it
    (and does not stop it)."""
    with pytest.MonkeyPatch.context() as mp:  # the quiet log4j file goes to a throwaway FOURFOLD_HOME
        mp.setenv("FOURFOLD_HOME", str(tmp_path_factory.mktemp("spark-home")))
        session, created = spark_session("local[2]")
    session.conf.set("spark.sql.shuffle.partitions", "4")
    yield session
    if created:
        session.stop()


@pytest.fixture
def model_uri(model_uri: str, spark: Any) -> str:
    """The shared model, once the Spark session is up."""
    return model_uri


def _write_input(root: Path, files: int, *, bad: bool = False, seed: int = 0) -> pa.Table:
    """``files`` parquet files of ``user_id``, the model's features and an extra column; with ``bad``,
    rows with a missing id, NaN, +-inf, null features - and both a missing id and a NaN (id first)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    tables = []
    for i in range(files):
        n = ROWS_PER_FILE
        ids: list[str | None] = [f"u{i:03d}-{j:04d}" for j in range(n)]
        cols: dict[str, Any] = {f: rng.standard_normal(n) for f in FEATURES}
        nulls = np.zeros(n, dtype=bool)
        if bad:
            for j in range(0, n, 23):
                ids[j] = None
            cols["x1"][7::29] = np.nan
            cols["x2"][11::31] = np.inf
            cols["x4"][13::37] = -np.inf
            cols["x1"][46] = np.nan  # with ids[46] = None: the id's reason wins
            nulls[17::41] = True
        arrays = {"user_id": pa.array(ids, pa.string())}
        for f in FEATURES:
            arrays[f] = pa.array(cols[f], mask=nulls if f == "x3" else None)
        arrays["segment"] = pa.array([f"s{j % 5}" for j in range(n)])
        t = pa.table(arrays)
        pq.write_table(t, root / f"part-{i:03d}.parquet")
        tables.append(t)
    return pa.concat_tables(tables)


def _read(dest: Path, pattern: str = "part-*.parquet") -> pa.Table:
    """The files' rows (no partition columns from ``key=value`` directories), sorted by id."""
    tables = [pq.ParquetFile(f).read() for f in sorted(dest.glob(pattern))]
    return pa.concat_tables(t.replace_schema_metadata(None) for t in tables).sort_by("user_id")


def _rows(table: pa.Table) -> list[str]:
    """Rows as sorted reprs: NaN-safe, order-free."""
    return sorted(repr(sorted(r.items())) for r in table.to_pylist())


def test_scores_equal_the_predictor_and_the_output_is_typed(
    spark: Any, model_uri: str, tmp_path: Path
) -> None:
    data = _write_input(tmp_path / "in", files=3)
    summary = run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                        id_cols=("user_id",), partition="date=2025-04-15", **SPARK)  # fmt: skip
    dest = tmp_path / "out" / "date=2025-04-15"
    assert (summary.engine, summary.rows_in, summary.rows_out, summary.rejected) == ("spark", 900, 900, 0)
    assert json.loads((dest / "_SUCCESS").read_text())["engine"] == "spark"
    names = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert names[:2] == ["_FOURFOLD", "_SUCCESS"]
    assert all(re.fullmatch(r"part-spark-\d{5}\.parquet", n) for n in names[2:]), names  # no crc, no _spark
    assert sorted(json.loads((dest / "_FOURFOLD").read_text())["files"]) == names[1:]
    assert not list(tmp_path.joinpath("out").glob(".staging-*"))

    out = _read(dest)
    assert [(f.name, f.type) for f in out.schema] == [
        ("user_id", pa.string()), ("score", pa.float64()), ("label", pa.int64()),
        ("model_version", pa.string()),
    ]  # fmt: skip
    by_id = data.sort_by("user_id")
    assert out["user_id"].to_pylist() == by_id["user_id"].to_pylist()
    expected = load_predictor(model_uri).predict(by_id)
    np.testing.assert_allclose(out["score"].to_numpy(), expected["score"], rtol=0, atol=1e-12)
    assert out["label"].to_pylist() == expected["label"].tolist()
    assert set(out["model_version"].to_pylist()) == {"1"}


def test_bad_rows_counts_and_scores_equal_the_local_engine(
    spark: Any, model_uri: str, tmp_path: Path
) -> None:
    _write_input(tmp_path / "in", files=4, bad=True)
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"), "id_cols": ("user_id",)}
    local = run_batch(output=str(tmp_path / "local"), **kw)
    on_spark = run_batch(output=str(tmp_path / "spark"), **kw, **SPARK)
    assert local.rejected > 40
    for field in ("rows_in", "rows_out", "rejected", "score_quantiles"):
        assert getattr(on_spark, field) == getattr(local, field), field

    a, b = _read(tmp_path / "local"), _read(tmp_path / "spark")
    assert b.schema == a.schema
    assert a["user_id"].to_pylist() == b["user_id"].to_pylist()
    np.testing.assert_allclose(b["score"].to_numpy(), a["score"].to_numpy(), rtol=0, atol=1e-12)

    qa, qb = _read(tmp_path / "local", "_quarantine/*.parquet"), _read(tmp_path / "spark", "_quarantine/*")
    assert qb.schema == qa.schema  # every input column + _reason
    assert _rows(qb) == _rows(qa)
    assert set(qb["_reason"].to_pylist()) == {
        "missing 'user_id'", "feature 'x1' is null or NaN",
        "feature 'x2' is infinite (or beyond the float64 range)", "feature 'x3' is null or NaN",
        "feature 'x4' is infinite (or beyond the float64 range)",
    }  # fmt: skip

    # the quantiles are real ones: np.quantile of the written scores, within one bin of 1 / 65,536
    scores = b["score"].to_numpy()
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert abs(on_spark.score_quantiles[name] - np.quantile(scores, q)) <= 2e-5, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spark_sql_validation_gives_the_row_checks_reasons(spark: Any, tmp_path: Path, dtype: type) -> None:
    """Edge values (float32's overflow boundary, NaN, +-inf, null, fractions and out-of-range values for
    integer and bool features) in double, float, int and bool columns, nullable and not: the ``_reason``
    column built from ``RowCheck.sql`` equals ``RowCheck.check``'s reasons - the one check, twice."""
    big = [0.0, 1e39, -1e39, F32_OVERFLOW, float(np.nextafter(F32_OVERFLOW, 0)), -F32_OVERFLOW,
           float(np.finfo(np.float32).max), np.inf, -np.inf, np.nan, None, 1e308, 5e-324, 1.5]  # fmt: skip
    n = len(big)
    table = pa.table({
        "row": pa.array(range(n), pa.int64()),
        "id": pa.array([None if i == 5 else f"r{i}" for i in range(n)]),
        "a": pa.array(big, pa.float64()),
        "b": pa.array(big[::-1], pa.float64()),
        "c": pa.array([None if i % 4 == 0 else i * 100 for i in range(n)], pa.int64()),
        "d": pa.array([None if i == 3 else float(i) for i in range(n)], pa.float32()),
        "e": pa.array([None if i == 8 else bool(i % 2) for i in range(n)]),
        "f": pa.array([0.5 * i for i in range(n)], pa.float64()),
    })  # fmt: skip
    pq.write_table(table, tmp_path / "edge.parquet")
    sig = Signature.for_task("binary", [
        Feature("a"), Feature("b", nullable=True), Feature("c", "int64"),
        Feature("d", "float32", nullable=True), Feature("e", "bool"), Feature("f", "int8"),
    ])  # fmt: skip
    rules = RowCheck(sig, dtype)
    reasons = rules.check(table, required=["id"]).reasons()
    assert reasons is not None
    df = spark.read.parquet(str(tmp_path / "edge.parquet"))
    got = df.select("row", reason_column(rules, ["id"], df.schema).alias("_reason")).orderBy("row").collect()
    assert [r["_reason"] for r in got] == list(reasons)
    assert len(set(reasons)) >= 5


def test_the_histogram_of_the_written_scores_gives_numpys_quantiles(tmp_path: Path) -> None:
    from fourfold.batch.spark import _file_histogram

    scores = np.concatenate([np.random.default_rng(1).beta(0.3, 4.0, 5_000), [0.0, 1.0, 0.5]])
    pq.write_table(pa.table({"score": scores[:3_000]}), tmp_path / "part-00000.parquet")
    pq.write_table(pa.table({"score": scores[3_000:]}), tmp_path / "part-00001.parquet", row_group_size=500)
    hist = _file_histogram(tmp_path, "score")
    assert hist.total == len(scores)
    for q in (0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0):
        assert abs(hist.quantile(q) - np.quantile(scores, q)) <= 2e-5, q


def test_multiclass_output_schema_equals_the_local_engines(spark: Any, tmp_path: Path) -> None:
    """Both engines encode outputs with ``outputs.to_arrow``: ``probabilities`` is a
    ``list<element: double>`` in both, and the values agree."""
    from sklearn.ensemble import RandomForestClassifier

    from fourfold import save_model

    data = _write_input(tmp_path / "in", files=2)
    x = np.column_stack([data[f].to_numpy() for f in FEATURES])
    y = np.digitize(x[:, 0], [-0.5, 0.5])
    model = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
    pkg = save_model(model, tmp_path / "pkg", name="tri", sample=data.select(FEATURES))
    kw: dict[str, Any] = {"model": str(pkg.path), "input": str(tmp_path / "in"), "id_cols": ("user_id",)}
    run_batch(output=str(tmp_path / "local"), **kw)
    run_batch(output=str(tmp_path / "spark"), **kw, **SPARK)
    a, b = _read(tmp_path / "local"), _read(tmp_path / "spark")
    assert b.schema == a.schema
    assert a.schema.field("probabilities").type == pa.list_(pa.field("element", pa.float64()))
    np.testing.assert_allclose(
        np.array(b["probabilities"].to_pylist()), np.array(a["probabilities"].to_pylist()), atol=1e-12
    )
    assert b["label"].to_pylist() == a["label"].to_pylist()


def test_csv_input_scores_like_the_local_engine(spark: Any, model_uri: str, tmp_path: Path) -> None:
    data = _write_input(tmp_path / "pq", files=2)
    (tmp_path / "csv").mkdir()
    for i, t in enumerate((data.slice(0, ROWS_PER_FILE), data.slice(ROWS_PER_FILE))):
        pa.csv.write_csv(t, tmp_path / "csv" / f"part-{i}.csv")
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "csv"), "id_cols": ("user_id",)}
    local = run_batch(output=str(tmp_path / "local"), **kw)
    on_spark = run_batch(output=str(tmp_path / "spark"), **kw, **SPARK)
    assert (on_spark.rows_in, on_spark.rows_out) == (local.rows_in, local.rows_out) == (600, 600)
    a, b = _read(tmp_path / "local"), _read(tmp_path / "spark")
    assert a["user_id"].to_pylist() == b["user_id"].to_pylist()
    np.testing.assert_allclose(b["score"].to_numpy(), a["score"].to_numpy(), rtol=0, atol=1e-12)


def test_too_many_rejected_rows_commit_nothing_and_a_resumed_run_is_exactly_once(
    spark: Any, model_uri: str, tmp_path: Path
) -> None:
    _write_input(tmp_path / "in", files=2, bad=True)
    kw = {"model": model_uri, "input": str(tmp_path / "in"), "output": str(tmp_path / "out"),
          "id_cols": ("user_id",), **SPARK}  # fmt: skip
    with pytest.raises(JobFailed, match=r"over --max-rejected 0\.01; nothing was committed"):
        run_batch(**kw, max_rejected=0.01)
    assert not (tmp_path / "out").exists()
    staging = tmp_path / ".staging-out"
    assert list(staging.glob("part-spark-*.parquet"))  # the failed attempt's parts are still staged

    summary = run_batch(**kw, resume=True)  # re-runs the whole Spark stage over the staged attempt
    out = _read(tmp_path / "out")
    assert out.num_rows == summary.rows_out == len(set(out["user_id"].to_pylist()))
    assert out.equals(_read_fresh(kw, tmp_path / "fresh"))
    quarantined = pq.read_table(sorted((tmp_path / "out" / "_quarantine").glob("*.parquet")))
    assert quarantined.num_rows == summary.rejected


def _read_fresh(kw: dict[str, Any], out: Path) -> pa.Table:
    run_batch(**{**kw, "output": str(out)})
    return _read(out)


def test_rerunning_a_partition_replaces_it_and_workers_keep_the_model(
    spark: Any, model_uri: str, tmp_path: Path
) -> None:
    _write_input(tmp_path / "in", files=2)
    kw = {"model": model_uri, "input": str(tmp_path / "in"), "output": str(tmp_path / "out" / "{date}"),
          "id_cols": ("user_id",), "partition": "date=2025-04-15", **SPARK}  # fmt: skip
    run_batch(**kw)
    first = _read(tmp_path / "out" / "2025-04-15")
    run_batch(**kw)
    second = _read(tmp_path / "out" / "2025-04-15")
    assert second.equals(first)
    assert second.num_rows == 2 * ROWS_PER_FILE  # replaced, not appended

    def probe(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from fourfold.batch import spark_worker as engine

        for _ in batches:
            names = sorted({key[0] for key in engine._MODELS})
            yield pa.record_batch({"pid": [os.getpid()], "models": [",".join(names)]})

    # the Python workers still hold the package (loaded once, kept across tasks and jobs), by content sha
    shipped = "fourfold-model-" + sha256_file(resolve(model_uri).path / MANIFEST)[:16]
    found = spark.range(0, 8, 1, 8).mapInArrow(probe, "pid long, models string").collect()
    held = [r["models"].split(",") for r in found if r["models"]]
    assert held
    assert all(shipped in names and len(names) <= 2 for names in held)


def test_cli_runs_on_spark(spark: Any, model_uri: str, tmp_path: Path) -> None:
    _write_input(tmp_path / "in", files=2, bad=True)
    args = ["batch", model_uri, "-i", str(tmp_path / "in"), "--id-cols", "user_id", "--engine", "spark",
            "--spark-master", "local[2]"]  # fmt: skip
    ok = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert "(spark)" in ok.stdout
    assert "rejected rows:" in ok.stdout
    failed = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "o2"), "--max-rejected", "5"])
    assert failed.exit_code == 3
    assert not (tmp_path / "o2").exists()
