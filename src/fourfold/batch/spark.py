"""The Spark engine (``engine="spark"``): the job's source scored on Spark, the same answer as the local
engine, committed by the same sink.

    >>> # run_batch(model="models:/churn/production", input="users/", output="scores/",
    >>> #           id_cols=("user_id",), engine="spark", spark_master="local[*]")

* **Validation in Spark SQL**: one ``_reason`` column built from
  :func:`fourfold.model.expressions.sql_conditions` - the one row check's rules as ``(condition, reason)``
  pairs, ids first, then the features in the signature's order, the first true condition wins - so a
  row gets the reason :meth:`fourfold.Predictor.check` gives it. Bad rows (every input column +
  ``_reason``) are written by Spark to ``_quarantine/`` without a Python worker; good rows go through
  ``mapInArrow``.
* **The model is shipped, not broadcast**: the package directory (a copy named by its manifest's sha256)
  goes to the executors with ``SparkContext.addFile(path, recursive=True)`` on a local master, as a zip
  with ``SparkContext.addArchive`` on a cluster; each Python worker loads it
  once (``SparkFiles.get``, the files' sha256 verified) into a module-level cache, with one model thread
  (``OMP_NUM_THREADS=1``: Spark runs one Python worker per core). Nothing model-sized is in a closure.
* **Partitions**: about ``3 x defaultParallelism`` (the 2-4x per core rule) - Spark's file splits
  (``spark.sql.files.minPartitionNum``, at most one per parquet row group), and a round-robin
  ``repartition`` only when the input has fewer than ``2 x defaultParallelism`` real splits.
* **Typed output**: the schema is built from the id columns' types and the signature's outputs
  (``score double, label bigint, probabilities array<double>, ..., model_version string``), the types
  :func:`fourfold.model.outputs.to_arrow` gives the local engine.
* **Exactly once**: Spark writes into ``staging/_spark/``; its ``part-*.parquet`` files move up to
  ``staging/part-spark-NNNNN.parquet`` (``_SUCCESS`` and ``.crc`` files dropped; the sink writes its
  own ``_SUCCESS`` on commit). Counts are exact: rows from the written files' parquet footers (checked
  against the input's footers; no rejected row there, no quarantine pass), the score histogram from
  the written files' score column, read on the driver.
* **Resume**: a resumed Spark job re-runs the whole Spark stage (Spark's task retries already cover lost
  executors); the earlier attempt's Spark files are deleted first, so the output is still exactly once.

On a cluster (``spark://``, ``yarn``, ``k8s://``) every executor needs fourfold (and the model's library)
installed - the model package itself is shipped - and the input files and the staging directory (next
to the output) on a filesystem the driver and every executor see at the same path.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fourfold.batch.engine import Plan
from fourfold.batch.histogram import ScoreHistogram
from fourfold.batch.rows import Counts
from fourfold.batch.sources import Fragment, Source
from fourfold.batch.spark_master import is_local
from fourfold.batch.spark_session import _conf, spark_session
from fourfold.batch.spark_worker import _Model, _score_partition
from fourfold.errors import ConflictError, FourfoldError
from fourfold.model.check import RowCheck
from fourfold.model.expressions import sql_conditions
from fourfold.model.package import MANIFEST, ModelPackage, sha256_file
from fourfold.model.signature import Signature

__all__ = ["SparkEngine", "reason_column", "spark_session"]

_PER_CORE = 3  # partitions per core: the seed's "2-4x executor cores"
_SPARK_TYPES = {"float64": "DoubleType", "float32": "FloatType", "int64": "LongType", "int32": "IntegerType",
                "int16": "ShortType", "int8": "ByteType", "bool": "BooleanType"}  # fmt: skip


# -- the driver side -----------------------------------------------------------------------------------------
def _ship_package(spark: Any, pkg: ModelPackage) -> str:
    """Add the package to the job's files under a name unique to its content; return the name the Python
    workers pass to ``SparkFiles.get``.

    Spark keys added files by their base name, and registered packages are all called ``1``, ``2`` ...:
    the copy (hard links where possible) is named ``fourfold-model-<sha256 of the manifest>``. A local
    master takes the directory itself (``addFile(recursive=True)``); a cluster's executors fetch files
    from the driver and take no directory, so they get a zip of it (``addArchive``, unpacked once per
    executor under the same name + ``.zip``)."""
    from fourfold.settings import Settings

    name = f"fourfold-model-{sha256_file(pkg.path / MANIFEST)[:16]}"
    shipped = Settings().home / "spark" / name
    if not shipped.exists():
        _publish(shipped, lambda tmp: shutil.copytree(pkg.path, tmp, copy_function=_link_or_copy))
    if is_local(str(spark.sparkContext.master)):
        spark.sparkContext.addFile(str(shipped), recursive=True)
        return name
    archive = shipped.with_name(f"{name}.zip")
    if not archive.exists():
        _publish(archive, lambda tmp: _zip(shipped, tmp))
    spark.sparkContext.addArchive(str(archive))
    return archive.name


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _zip(directory: Path, dest: Path) -> None:
    """The package's files, stored (a model file compresses little, and executors unpack it at once)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as z:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(directory).as_posix())


def _publish(dest: Path, make: Callable[[Path], object]) -> None:
    """``make`` a file or directory under a temporary name next to ``dest``, then rename it into place
    (content-named: another job that published it meanwhile published the same)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
    make(tmp)
    try:
        os.replace(tmp, dest)
    except OSError:  # another job shipped the same package meanwhile (a directory in the way)
        shutil.rmtree(tmp, ignore_errors=True)


def _uri(path: str | Path) -> str:
    """A local path as Hadoop wants it: ``file://`` + the absolute path, not percent-encoded (Hadoop would
    keep ``date%3D2025-04-15`` as the name)."""
    return "file://" + os.path.abspath(path)


def _spark_path(source: Source, frag: Fragment) -> str:
    if frag.filesystem is None:
        return _uri(frag.path)
    scheme = source.spec.split("://", 1)[0]
    return f"{scheme}://{frag.path}"


def _read(spark: Any, source: Source) -> Any:
    paths = [_spark_path(source, f) for f in source.fragments]
    if source.fragments[0].format == "csv":
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.read.csv(paths, header=True, schema=from_arrow_schema(source.schema))
    return spark.read.parquet(*paths)


def _row_groups(source: Source) -> int | None:
    """The input's real splits (parquet row groups), or None when unknown."""
    if source.fragments[0].format != "parquet":
        return None
    try:
        return sum(
            int(pq.ParquetFile(f.path, filesystem=f.filesystem).metadata.num_row_groups)
            for f in source.fragments
        )
    except (OSError, pa.ArrowInvalid):
        return None


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _col(name: str) -> Any:
    from pyspark.sql import functions as F

    return F.col(_quote(name))


def reason_column(rules: RowCheck, required: Sequence[str], schema: Any) -> Any:
    """The ``_reason`` column: NULL for a row the model can score, else the reason
    :meth:`fourfold.Predictor.check` gives it - the pairs of
    :func:`~fourfold.model.expressions.sql_conditions`, the first true one wins.

    Conditions are SQL text (one Py4J call each, not one per operator); the reasons are literals."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    floating = [c for c in required if isinstance(schema[c].dataType, T.FloatType | T.DoubleType)]
    cases = sql_conditions(rules, required, floating)
    if not cases:
        return F.lit(None).cast("string")
    reason = F.when(F.expr(cases[0][0]), F.lit(cases[0][1]))
    for cond, text in cases[1:]:
        reason = reason.when(F.expr(cond), F.lit(text))
    return reason


def _output_schema(df: Any, signature: Signature, id_cols: Sequence[str]) -> Any:
    from pyspark.sql import types as T

    fields = [df.schema[c] for c in id_cols]
    for out in signature.outputs:
        base = getattr(T, _SPARK_TYPES[out.dtype])()
        fields.append(T.StructField(out.name, T.ArrayType(base) if out.shape else base, True))
    fields.append(T.StructField("model_version", T.StringType(), True))
    return T.StructType(fields)


def _file_histogram(root: Path, column: str) -> ScoreHistogram:
    """The histogram of the ``column`` of the parquet parts under ``root``, streamed one record batch at
    a time (the local engine's bins)."""
    hist = ScoreHistogram()
    for part in sorted(root.glob("*.parquet")):
        with pq.ParquetFile(part) as f:
            for batch in f.iter_batches(columns=[column], batch_size=1 << 18):
                hist.add(batch.column(0).to_numpy(zero_copy_only=False))
    return hist


def _parts_rows(directory: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in directory.glob("part-*.parquet"))


def _move_parts(src: Path, dest: Path) -> int:
    """Move Spark's non-empty ``part-*.parquet`` from ``src`` to ``dest/part-spark-NNNNN.parquet``; drop the
    rest (``_SUCCESS``, ``.crc``, empty parts). Returns the rows moved (from the parquet footers)."""
    rows, n = 0, 0
    for part in sorted(src.glob("part-*.parquet")) if src.exists() else ():
        count = pq.ParquetFile(part).metadata.num_rows
        if not count:
            continue
        dest.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest / f"part-spark-{n:05d}.parquet")
        rows, n = rows + count, n + 1
    shutil.rmtree(src, ignore_errors=True)
    return rows


def _clear_staging(staging: Path, plan: Plan) -> None:
    """Drop an earlier Spark attempt's files (a resumed Spark job re-runs the whole stage)."""
    if len(plan.todo) != len(plan.source.fragments) or any(staging.glob("part-*.done")):
        raise ConflictError(
            f"{staging} holds fragments a local-engine run finished; the Spark engine re-runs the whole "
            "job: run it without --resume",
        )
    shutil.rmtree(staging / "_spark", ignore_errors=True)
    for old in [*staging.glob("part-spark-*.parquet"), *staging.glob("_quarantine/part-spark-*.parquet")]:
        old.unlink()


def _spark_error(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error:" in ln or "Exception:" in ln]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:500]


@dataclass(frozen=True)
class SparkEngine:
    """Scores on Spark: the active session (on ``master`` when given), or one started on ``master``
    (default ``local[*]``; ``spark_session.py``)."""

    master: str | None = None
    name: str = "spark"

    def run(self, plan: Plan) -> list[Counts]:
        """Score the whole ``plan.source`` on Spark into ``plan.staging`` (``part-spark-*.parquet`` +
        ``_quarantine/``); one Counts for the job."""
        _clear_staging(plan.staging, plan)
        spark, created = spark_session(self.master)
        try:
            from pyspark.errors import PySparkException

            java_error: Any = importlib.import_module("py4j.protocol").Py4JJavaError  # an uncaught JVM error
            try:
                return [_run(spark, plan)]
            except (PySparkException, java_error) as exc:
                raise FourfoldError(f"the Spark job failed: {_spark_error(exc)}") from exc
        finally:
            if created:
                spark.stop()


def _run(spark: Any, plan: Plan) -> Counts:
    from pyspark.sql import functions as F

    predictor, source, staging, inputs = plan.predictor, plan.source, plan.staging, plan.inputs
    signature = predictor.signature
    cores = int(spark.sparkContext.defaultParallelism)
    target = _PER_CORE * cores
    ids = list(inputs.id_cols)
    features = [f for f in signature.feature_names if f not in inputs.id_cols]
    ref = _Model(
        name=_ship_package(spark, predictor.package), version=predictor.version, runtime=predictor.runtime,
        id_cols=inputs.id_cols,
    )  # fmt: skip
    work = staging / "_spark"
    groups = _row_groups(source)  # a parquet split without a row group's start reads nothing: ask for no more
    settings = {
        "spark.sql.files.minPartitionNum": str(target if groups is None else max(1, min(target, groups))),
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(plan.batch_rows),
    }
    with _conf(spark, settings):
        df = _read(spark, source)
        renamed = {name: _col(field) for name, field in inputs.assembly.request if name != field}
        view = df.withColumns(renamed) if renamed else df  # a request feature read from its field's column
        checked = view.withColumn("_reason", reason_column(predictor.rules, inputs.required, df.schema))
        good = checked.where(F.col("_reason").isNull()).select(*[_quote(c) for c in [*ids, *features]])
        splits = df.rdd.getNumPartitions()
        if min(splits, groups if groups is not None else splits) < 2 * cores:
            good = good.repartition(target)  # too few real splits for the cores: spread the rows
        scored = good.mapInArrow(functools.partial(_score_partition, ref), _output_schema(df, signature, ids))
        spark.sparkContext.setJobDescription("fourfold batch: score")
        scored.write.mode("overwrite").parquet(_uri(work / "out"))
        rows_out = _parts_rows(work / "out")
        # the histogram from the committed files' score column on the driver: exact whatever tasks were
        # retried, and a third of the job's time cheaper than aggregates observed on every row in the JVM
        has_score = any(o.name == "score" and not o.shape for o in signature.outputs)
        hist = _file_histogram(work / "out", "score") if has_score else ScoreHistogram()
        counted = [f.rows for f in source.fragments]
        rows_in = sum(n or 0 for n in counted) if all(n is not None for n in counted) else None
        if rows_in is None or rows_out < rows_in:  # parquet footers say whether any row was rejected
            spark.sparkContext.setJobDescription("fourfold batch: quarantine")
            bad = checked.where(F.col("_reason").isNotNull()).select(
                *[_quote(c) for c in df.columns], "_reason"
            )
            bad.write.mode("overwrite").parquet(_uri(work / "quarantine"))
    moved = _move_parts(work / "out", staging)
    rejected = _move_parts(work / "quarantine", staging / "_quarantine")
    shutil.rmtree(work, ignore_errors=True)
    if moved != rows_out or (rows_in is not None and rows_out + rejected != rows_in):
        local = str(spark.sparkContext.master).startswith("local")
        raise FourfoldError(
            f"the Spark job wrote {moved:,} of {rows_out:,} scored + {rejected:,} rejected rows for "
            f"{'?' if rows_in is None else format(rows_in, ',')} input rows; nothing was committed"
            + ("" if local else f" (on a cluster the staging directory {staging} must be on a filesystem "
               "the driver and every executor see at the same path)")
        )  # fmt: skip
    return Counts(rows_out + rejected, rows_out, rejected, hist)
