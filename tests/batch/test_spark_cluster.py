"""The Spark engine on a real standalone cluster: a master and two 1-core workers started from the
pyspark package on 127.0.0.1 (``tests/sparkcluster.py``), one Spark application for the module.

The job scores there as on ``local[*]`` - the local engine's scores and quarantine row by row, the
package shipped to the executors as an archive, exactly-once commits and resume - and a master that
does not answer, or a cluster with no core free for the job, fails within a bound naming the URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import FEATURES
from fourfold.batch import run_batch
from fourfold.batch.spark_session import spark_session
from fourfold.batch.staging import Staging
from fourfold.cli.main import app
from fourfold.errors import ConflictError, UnavailableError
from fourfold.model.package import MANIFEST, sha256_file
from fourfold.registry.resolve import resolve
from sparkcluster import Cluster, standalone_cluster

FILES, ROWS_PER_FILE = 3, 1_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster"), workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def spark(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One application on the cluster for the module, started by the engine's own helper; the engine
    reuses it (and does not stop it)."""
    with pytest.MonkeyPatch.context() as mp:  # the quiet log4j file goes to a throwaway FOURFOLD_HOME
        mp.setenv("FOURFOLD_HOME", str(tmp_path_factory.mktemp("spark-home")))
        session, created = spark_session(cluster.url)
    assert created
    yield session
    session.stop()


def _write_input(root: Path) -> None:
    """``FILES`` parquet files of two row groups each; rows with a missing id, NaN, +inf, a null."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(FILES):
        n = ROWS_PER_FILE
        ids: list[str | None] = [f"u{i}-{j:04d}" for j in range(n)]
        for j in range(0, n, 97):
            ids[j] = None
        cols = {f: rng.standard_normal(n) for f in FEATURES}
        cols["x1"][5::89] = np.nan
        cols["x2"][7::101] = np.inf
        x3 = pa.array(cols.pop("x3"), mask=np.arange(n) % 113 == 11)
        segment = [f"s{j % 3}" for j in range(n)]
        t = pa.table({"user_id": pa.array(ids, pa.string()), **cols, "x3": x3, "segment": segment})
        pq.write_table(t, root / f"part-{i}.parquet", row_group_size=n // 2)


def _read(dest: Path, pattern: str = "part-*.parquet") -> pa.Table:
    tables = [pq.ParquetFile(f).read() for f in sorted(dest.glob(pattern))]
    return pa.concat_tables(t.replace_schema_metadata(None) for t in tables).sort_by("user_id")


def _rows(table: pa.Table) -> list[str]:
    return sorted(repr(sorted(r.items())) for r in table.to_pylist())


def _assert_same_output(got: Path, want: Path) -> None:
    """Row by row: the scores, and the quarantined rows with their reasons."""
    a, b = _read(want), _read(got)
    assert b.schema == a.schema
    assert b["user_id"].to_pylist() == a["user_id"].to_pylist()
    assert len(set(b["user_id"].to_pylist())) == b.num_rows  # exactly once
    np.testing.assert_allclose(b["score"].to_numpy(), a["score"].to_numpy(), rtol=0, atol=1e-12)
    assert b["label"].to_pylist() == a["label"].to_pylist()
    qa, qb = _read(want, "_quarantine/*.parquet"), _read(got, "_quarantine/*.parquet")
    assert qb.schema == qa.schema
    assert _rows(qb) == _rows(qa)


def _committed(dest: Path) -> dict[str, Any]:
    """The summary in ``_SUCCESS``, once nothing but the committed files is left."""
    assert not list(dest.parent.glob(f".staging-{dest.name}*"))
    assert not (dest / "_spark").exists()
    summary: dict[str, Any] = json.loads((dest / "_SUCCESS").read_text())
    return summary


# -- before the module's application starts ------------------------------------------------------------------
def test_a_master_that_does_not_answer_fails_at_once_naming_it(
    cluster: Cluster, model_uri: str, tmp_path: Path
) -> None:
    _write_input(tmp_path / "in")
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"), "output": str(tmp_path / "out"),
                          "engine": "spark", "spark_master": "spark://127.0.0.1:1"}  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(
        UnavailableError, match=r"cannot reach the Spark master spark://127\.0\.0\.1:1 "
    ) as err:
        run_batch(**kw)
    assert time.monotonic() - t0 < 10
    assert err.value.status == 503
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".staging-out").exists()

    args = ["batch", model_uri, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--engine", "spark"]
    failed = CliRunner().invoke(app, [*args, "--spark-master", "spark://127.0.0.1:1"])
    assert failed.exit_code == 1
    assert "error: cannot reach the Spark master spark://127.0.0.1:1" in failed.output
    malformed = CliRunner().invoke(app, [*args, "--spark-master", "spark://127.0.0.1"])
    assert malformed.exit_code == 2
    assert "--spark-master 'spark://127.0.0.1' wants spark://HOST:PORT" in malformed.output


# -- on the module's application -----------------------------------------------------------------------------
def test_the_cluster_scores_like_the_local_engine_on_its_executors(
    spark: Any, cluster: Cluster, model_uri: str, tmp_path: Path
) -> None:
    """Row by row the local engine's output; the application is the cluster's, its Python workers run in
    the standalone workers' executor directories and hold the model loaded from the archive Spark
    unpacked there - not the driver's copy of the package."""
    _write_input(tmp_path / "in")
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"), "id_cols": ("user_id",)}
    local = run_batch(output=str(tmp_path / "local"), **kw)
    on_cluster = run_batch(output=str(tmp_path / "spark"), engine="spark", spark_master=cluster.url, **kw)
    assert local.rejected > 60
    for field in ("rows_in", "rows_out", "rejected", "score_quantiles"):
        assert getattr(on_cluster, field) == getattr(local, field), field
    _assert_same_output(tmp_path / "spark", tmp_path / "local")
    assert _committed(tmp_path / "spark")["engine"] == "spark"

    app_id = spark.sparkContext.applicationId  # listed by the cluster's master, with both workers' cores
    [listed] = [a for a in cluster.state()["activeapps"] if a["id"] == app_id]
    assert (listed["name"], listed["cores"]) == ("fourfold-batch", 2)

    def probe(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from fourfold.batch import spark_worker

        for _ in batches:
            paths = [str(p.package.path) for p in spark_worker._MODELS.values()]
            yield pa.record_batch({"cwd": [os.getcwd()], "models": [",".join(paths)]})

    found = spark.range(0, 16, 1, 16).mapInArrow(probe, "cwd string, models string").collect()
    executors = {Path(r["cwd"]) for r in found}
    assert {e.parent for e in executors} <= {cluster.root / f"worker-{i}" / app_id for i in range(2)}
    assert len({e.parent.parent for e in executors}) == 2  # both workers ran Python workers
    archive = "fourfold-model-" + sha256_file(resolve(model_uri).path / MANIFEST)[:16] + ".zip"
    loaded = {Path(p) for r in found for p in r["models"].split(",") if p}
    assert archive in {p.name for p in loaded}
    assert all(p.suffix == ".zip" and any(p.is_relative_to(e) for e in executors) for p in loaded), loaded


def test_a_driver_killed_before_the_commit_resumes_exactly_once(
    spark: Any, cluster: Cluster, model_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver dies (kill -9: no cleanup runs) after the scored parts moved into staging, with the
    quarantine still in Spark's directory; ``fourfold batch --resume`` re-runs the Spark stage over those
    leftovers and commits each row once."""
    from fourfold.batch import spark as engine

    _write_input(tmp_path / "in")
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"), "id_cols": ("user_id",),
                          "output": str(tmp_path / "out"), "engine": "spark",
                          "spark_master": cluster.url}  # fmt: skip
    real_move = engine._move_parts

    def dies_on_the_quarantine(src: Path, dest: Path) -> int:
        if src.name == "quarantine":
            raise SystemExit("killed")
        return real_move(src, dest)

    with monkeypatch.context() as m:
        m.setattr(engine, "_move_parts", dies_on_the_quarantine)
        m.setattr(Staging, "remove", lambda self: None)  # a killed process cleans nothing up
        with pytest.raises(SystemExit):
            run_batch(**kw)
    staging = tmp_path / ".staging-out"
    assert list(staging.glob("part-spark-*.parquet"))
    assert list((staging / "_spark" / "quarantine").glob("part-*.parquet"))
    assert not (tmp_path / "out").exists()

    args = ["batch", model_uri, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--id-cols",
            "user_id", "--engine", "spark", "--spark-master", cluster.url]  # fmt: skip
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "(spark)" in resumed.stdout
    assert "resumed" not in resumed.stdout  # no fragment skipped: the whole Spark stage ran again
    _assert_same_output(tmp_path / "out", _local_output(kw, tmp_path / "local"))
    committed = _committed(tmp_path / "out")
    assert committed["rows_in"] == FILES * ROWS_PER_FILE
    assert committed["rows_out"] == _read(tmp_path / "out").num_rows


def _local_output(kw: dict[str, Any], out: Path) -> Path:
    run_batch(**{**kw, "engine": "local", "spark_master": None, "output": str(out)})
    return out


def test_a_session_on_another_master_is_refused_not_reused(
    spark: Any, cluster: Cluster, model_uri: str, tmp_path: Path
) -> None:
    _write_input(tmp_path / "in")
    args = ["batch", model_uri, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--engine", "spark"]
    other = CliRunner().invoke(app, [*args, "--spark-master", "local[2]"])
    assert other.exit_code == 1
    assert f"already runs a SparkSession on {cluster.url}" in other.output
    with pytest.raises(ConflictError, match=r"--spark-master local\[2\]: .* stop that session first") as err:
        run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"), engine="spark",
                  spark_master="local[2]")  # fmt: skip
    assert err.value.status == 409
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".staging-out").exists()


def test_a_cluster_with_no_free_core_fails_within_the_executor_timeout(
    spark: Any, cluster: Cluster, model_uri: str, tmp_path: Path, fourfold_home: Path
) -> None:
    """The module's application holds both workers' cores: a second job's application gets no executor,
    and its driver gives up after FOURFOLD_SPARK_EXECUTOR_TIMEOUT seconds, naming the master."""
    _write_input(tmp_path / "in")
    env = {**os.environ, "FOURFOLD_HOME": str(fourfold_home), "FOURFOLD_SPARK_EXECUTOR_TIMEOUT": "1"}
    cmd = [sys.executable, "-m", "fourfold.cli.main", "batch", model_uri, "-i", str(tmp_path / "in"),
           "-o", str(tmp_path / "out"), "--engine", "spark", "--spark-master", cluster.url]  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"no executor of the Spark master {cluster.url} started within 1 s" in done.stderr
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".staging-out").exists()
    waiting = [a for a in cluster.state()["activeapps"] if a["id"] != spark.sparkContext.applicationId]
    assert not waiting  # the refused application was stopped, not left queued at the master
