"""Batch options are one frozen value, checked when made: a value that is not allowed is an
InvalidOptionError (400; the CLI exits 2) naming the option and what it accepts - never a silently
different job. And the package's shape: only the orchestrator imports the parts."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fourfold.batch
from fourfold.batch import BatchOptions, JobFailed, run_batch
from fourfold.cli.main import app
from fourfold.errors import InvalidOptionError
from fourfold.errors import JobFailed as CoreJobFailed

BASE: dict[str, Any] = {"model": "models:/churn/production", "input": "users/", "output": "scores/"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"engine": "sprak"}, "--engine must be one of 'local', 'spark'; got 'sprak'"),
        ({"runtime": "tensorrt"}, "--runtime must be one of 'auto', 'native', 'onnx', 'c'; got 'tensorrt'"),
        ({"workers": 0}, "--workers must be a whole number >= 1, got 0"),
        ({"threads": 0}, "--threads must be a whole number >= 1, got 0"),
        ({"batch_rows": 0}, "--batch-rows must be a whole number >= 1, got 0"),
        ({"max_rejected": -1}, "--max-rejected must be a count >= 0 or a fraction below 1, got -1"),
        ({"max_rejected": float("nan")}, "--max-rejected must be a count >= 0"),
        ({"events": "tx/", "as_of": "yesterday"}, "--as-of wants an ISO 8601 time"),
        ({"events": "tx/", "as_of": "2025-04-15", "timestamp": "ts"}, "--timestamp and --as-of exclude"),
        ({"as_of": "2025-04-15"}, "--as-of sets the as-of time of windowed features computed from --events"),
        ({"timestamp": "ts"}, "--timestamp sets the as-of time"),
        ({"query": "SELECT 1"}, "--query is only for a postgresql:// or duckdb:// input"),
        ({"input": "duckdb:///w.duckdb"}, "a SQL input (duckdb://) needs --query"),
        ({"table": "scores"}, "--table is for a postgresql:// or feature store output"),
        ({"quarantine": "bad/"}, "--quarantine is for a postgresql:// or feature store output"),
        ({"output": "s3://bucket/scores"}, "--output 's3://bucket/scores' is not supported"),
        ({"partition": "date"}, "--partition wants key=value"),
        ({"partition": "date=../../etc"}, "--partition wants key=value"),
        ({"id_cols": ("a", "a")}, "--id-cols wants distinct column names"),
        ({"spark_master": "local[2]"}, "--spark-master is for --engine spark"),
        ({"engine": "spark", "workers": 2}, "--workers and --threads are for --engine local"),
        ({"engine": "spark", "events": "tx/"}, "--events is for --engine local"),
        ({"engine": "spark", "spark_master": "spark://host"}, "wants spark://HOST:PORT[,HOST:PORT]"),
        ({"engine": "spark", "spark_master": "spark://h:7077,h2"}, "wants spark://HOST:PORT[,HOST:PORT]"),
        ({"engine": "spark", "spark_master": "spark://h:99999"}, "wants spark://HOST:PORT[,HOST:PORT]"),
        ({"engine": "spark", "spark_master": "local[two]"}, "--spark-master must be local[*], local[N]"),
        ({"engine": "spark", "spark_master": "127.0.0.1:7077"}, "--spark-master must be local[*]"),
    ],
)
def test_an_option_that_is_not_allowed_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptionError) as err:
        BatchOptions(**{**BASE, **changes})
    assert message in err.value.message
    assert err.value.status == 400


def test_options_are_frozen_and_replacing_a_field_checks_it_again() -> None:
    opts = BatchOptions(**BASE, id_cols=["user_id"], partition="date=2025-04-15")  # type: ignore[arg-type]
    assert opts.id_cols == ("user_id",)
    assert opts.partition_values == {"date": "2025-04-15"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.engine = "spark"  # type: ignore[misc]
    with pytest.raises(InvalidOptionError, match="--engine"):
        dataclasses.replace(opts, engine="sprak")
    with pytest.raises(InvalidOptionError, match="--engine"):  # run_batch(options, **changes) too
        run_batch(opts, engine="sprak")


def test_the_cli_refuses_a_bad_option_with_exit_2_and_never_runs_locally(tmp_path: Path) -> None:
    args = ["batch", "models:/churn/production", "-i", str(tmp_path), "-o", str(tmp_path / "out")]
    r = CliRunner().invoke(app, [*args, "--engine", "sprak"])
    assert r.exit_code == 2
    assert "error: --engine must be one of 'local', 'spark'; got 'sprak'" in r.output
    r = CliRunner().invoke(app, [*args, "--as-of", "2025-13-45", "--events", str(tmp_path)])
    assert r.exit_code == 2
    assert "--as-of wants an ISO 8601 time" in r.output
    assert not (tmp_path / "out").exists()


def test_job_failed_is_the_core_error() -> None:
    assert JobFailed is CoreJobFailed
    assert JobFailed("x").status == 422


def test_only_the_orchestrator_imports_the_parts() -> None:
    """``job.py`` is imported by nothing but ``fourfold.batch`` and the CLI, and no part receives the
    options object: they get explicit values."""
    root = Path(fourfold.batch.__file__).parent
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
        } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        if path.name not in ("__init__.py", "job.py"):
            assert "fourfold.batch.job" not in imported, path.name
            assert "BatchOptions" not in path.read_text() or path.name == "options.py", path.name
    cli = (root.parent / "cli" / "batch.py").read_text()
    assert "BatchJob" not in cli


@pytest.mark.parametrize(
    "master", ["local", "local[*]", "local[4]", "local[4,2]", "spark://10.0.0.5:7077",
               "spark://a:7077,b:7077", "spark://[::1]:7077", "yarn", "k8s://https://api:6443"],
)  # fmt: skip
def test_the_spark_masters_spark_takes_are_accepted(master: str) -> None:
    assert BatchOptions(**BASE, engine="spark", spark_master=master).spark_master == master
