"""The Spark engine (``engine="spark"``): the job's source scored on Spark, the same answer as the local
engine, committed by the same sink.

    >>> # run_batch(model="models:/churn/production", input="users/", output="scores/",
    >>> #           id_cols=("user_id",), engine="spark", spark_master="local[*]")

* **Validation in Spark SQL**: one ``_reason`` column - ``CASE WHEN user_id IS NULL THEN 'missing id ...'
  WHEN x1 IS NULL OR isnan(x1) OR abs(x1) >= inf THEN 'feature ...' ... END`` (ids first, then the
  features in the signature's order, the first reason wins; a nullable feature is bad only when infinite;
  with a float32 runtime ``abs(x) >= 2^128 - 2^103``, the values float32 rounds to inf) - the reasons
  :func:`fourfold.batch.rows.check_rows` gives. Bad rows (every input column + ``_reason``) are written by
  Spark to ``_quarantine/`` without a Python worker; good rows go through ``mapInArrow``.
* **The model is shipped, not broadcast**: the package directory (a copy named by its manifest's sha256)
  goes to the executors with ``SparkContext.addFile(path, recursive=True)``; each Python worker loads it
  once (``SparkFiles.get``, the files' sha256 verified) into a module-level cache, with one model thread
  (``OMP_NUM_THREADS=1``: Spark runs one Python worker per core). Nothing model-sized is in a closure.
* **Partitions**: about ``3 x defaultParallelism`` (the 2-4x per core rule) - Spark's file splits
  (``spark.sql.files.minPartitionNum``, at most one per parquet row group), and a round-robin
  ``repartition`` only when the input has fewer than ``2 x defaultParallelism`` real splits.
* **Typed output**: the schema is built from the id columns' types and the signature's outputs
  (``score double, label bigint, ..., model_version string``).
* **Exactly once**: Spark writes into ``staging/_spark/``; its ``part-*.parquet`` files move up to
  ``staging/part-spark-NNNNN.parquet`` (``_SUCCESS`` and ``.crc`` files dropped; the sink writes its
  own ``_SUCCESS`` on commit). Counts are exact: rows from the written files' parquet footers (checked
  against the input's footers; no rejected row there, no quarantine pass), the score histogram from
  the written files' score column, read on the driver.
* **Resume**: a resumed Spark job re-runs the whole Spark stage (Spark's task retries already cover lost
  executors); the earlier attempt's Spark files are deleted first, so the output is still exactly once.

On a cluster every executor needs fourfold (and the model's library) installed, and the input files and
the staging directory (next to the output) on a filesystem every executor reaches.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fourfold.batch.rows import BINS
from fourfold.batch.spark_session import _conf, spark_session
from fourfold.batch.spark_worker import _Model, _score_partition
from fourfold.errors import ConflictError, FourfoldError, InputError
from fourfold.model.package import MANIFEST, ModelPackage, sha256_file
from fourfold.model.predictor import Predictor

if TYPE_CHECKING:
    from fourfold.batch.job import BatchJob
    from fourfold.batch.sources import Fragment, Source

__all__ = ["score_on_spark", "spark_session"]

#: the smallest |float64| that float32 rounds to infinity (FLT_MAX + half an ulp; the tie goes to even)
F32_OVERFLOW = 2.0**128 - 2.0**103
_PER_CORE = 3  # partitions per core: the seed's "2-4x executor cores"
_SPARK_TYPES = {"float64": "DoubleType", "float32": "FloatType", "int64": "LongType", "int32": "IntegerType",
                "int16": "ShortType", "int8": "ByteType", "bool": "BooleanType"}  # fmt: skip


# -- the driver side -----------------------------------------------------------------------------------------
def _ship_package(spark: Any, pkg: ModelPackage) -> str:
    """Add the package directory to the job's files under a name unique to its content; return the name.

    Spark keys added files by their base name, and registered packages are all called ``1``, ``2`` ...:
    the copy (hard links where possible) is named ``fourfold-model-<sha256 of the manifest>``."""
    from fourfold.settings import Settings

    name = f"fourfold-model-{sha256_file(pkg.path / MANIFEST)[:16]}"
    shipped = Settings().home / "spark" / name
    if not shipped.exists():
        shipped.parent.mkdir(parents=True, exist_ok=True)
        tmp = shipped.with_name(f".{name}.{uuid.uuid4().hex}")

        def link_or_copy(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(pkg.path, tmp, copy_function=link_or_copy)
        try:
            os.replace(tmp, shipped)
        except OSError:  # another job shipped the same package meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    spark.sparkContext.addFile(str(shipped), recursive=True)
    return name


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


def _double(x: float) -> str:
    """A Spark SQL double literal for exactly ``x``."""
    if np.isinf(x):
        return f"CAST('{'-' if x < 0 else ''}Infinity' AS DOUBLE)"
    return f"{float(x)!r}D"


def reason_column(pkg: ModelPackage, id_cols: Sequence[str], input_dtype: Any) -> Any:
    """The ``_reason`` column: NULL for a row the model can score, else the local engine's reason.

    Conditions are SQL text (one Py4J call each, not one per operator); the reasons are literals."""
    from pyspark.sql import functions as F

    limit = _double(F32_OVERFLOW if np.dtype(input_dtype) == np.float32 else float("inf"))
    cases = [(f"{_quote(c)} IS NULL", f"missing id {c!r}") for c in id_cols]
    for f in pkg.signature.inputs:
        d = f"CAST({_quote(f.name)} AS DOUBLE)"
        too_big = f"abs({d}) >= {limit}"  # Spark orders NaN above every number: guarded below
        bad = f"NOT isnan({d}) AND {too_big}" if f.nullable else f"{d} IS NULL OR isnan({d}) OR {too_big}"
        cases.append((bad, f"feature {f.name!r} is null, NaN or infinite"))
    if not cases:
        return F.lit(None).cast("string")
    reason = F.when(F.expr(cases[0][0]), F.lit(cases[0][1]))
    for cond, text in cases[1:]:
        reason = reason.when(F.expr(cond), F.lit(text))
    return reason


def _output_schema(df: Any, pkg: ModelPackage, id_cols: Sequence[str]) -> Any:
    from pyspark.sql import types as T

    fields = [df.schema[c] for c in id_cols]
    for out in pkg.signature.outputs:
        base = getattr(T, _SPARK_TYPES[out.dtype])()
        fields.append(T.StructField(out.name, T.ArrayType(base) if out.shape else base, True))
    fields.append(T.StructField("model_version", T.StringType(), True))
    return T.StructType(fields)


def _file_histogram(root: Path, column: str) -> list[int]:
    """``np.histogram(scores, BINS, (0, 1))`` over the ``column`` of the parquet parts under ``root``,
    streamed one record batch at a time (the local engine's bins)."""
    import pyarrow.parquet as pq

    counts = np.zeros(BINS, dtype=np.int64)
    for part in sorted(root.glob("*.parquet")):
        with pq.ParquetFile(part) as f:
            for batch in f.iter_batches(columns=[column], batch_size=1 << 18):
                values = batch.column(0).to_numpy(zero_copy_only=False)
                counts += np.histogram(values, bins=BINS, range=(0.0, 1.0))[0]
    return [int(c) for c in counts]


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


def _clear_staging(staging: Path, job: BatchJob) -> None:
    """Drop an earlier Spark attempt's files (a resumed Spark job re-runs the whole stage)."""
    if job.resume and any(staging.glob("part-*.done")):
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


def score_on_spark(
    job: BatchJob, pkg: ModelPackage, source: Source, staging: Path, runtime: str
) -> list[dict[str, Any]]:
    """Score ``source`` on Spark into ``staging`` (``part-spark-*.parquet`` + ``_quarantine/``); return the
    job's counts (one entry: ``rows_in``, ``rows_out``, ``rejected``, ``hist``)."""
    if job.transform(pkg) is not None:
        raise InputError(
            "the Spark engine does not compute windowed features from --events; use --engine local",
        )
    # the driver loads the model once: a broken package fails here, and the input dtype decides validation
    input_dtype = Predictor(pkg, runtime=runtime).input_dtype  # type: ignore[arg-type]
    _clear_staging(staging, job)
    spark, created = spark_session(job.spark_master)
    try:
        from pyspark.errors import PySparkException

        java_error: Any = importlib.import_module("py4j.protocol").Py4JJavaError  # an uncaptured JVM error
        try:
            return _run(spark, job, pkg, source, staging, runtime, input_dtype)
        except (PySparkException, java_error) as exc:
            raise FourfoldError(f"the Spark job failed: {_spark_error(exc)}") from exc
    finally:
        if created:
            spark.stop()


def _run(
    spark: Any, job: BatchJob, pkg: ModelPackage, source: Source, staging: Path, runtime: str,
    input_dtype: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    from pyspark.sql import functions as F

    cores = int(spark.sparkContext.defaultParallelism)
    target = _PER_CORE * cores
    ids = list(job.id_cols)
    features = [f for f in pkg.signature.feature_names if f not in job.id_cols]
    ref = _Model(
        name=_ship_package(spark, pkg), version=pkg.version, runtime=runtime, id_cols=job.id_cols,
        outputs=tuple((o.name, o.dtype, len(o.shape)) for o in pkg.signature.outputs),
    )  # fmt: skip
    work = staging / "_spark"
    groups = _row_groups(source)  # a parquet split without a row group's start reads nothing: ask for no more
    settings = {
        "spark.sql.files.minPartitionNum": str(target if groups is None else max(1, min(target, groups))),
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(job.batch_rows),
    }
    with _conf(spark, settings):
        df = _read(spark, source)
        checked = df.withColumn("_reason", reason_column(pkg, ids, input_dtype))
        good = checked.where(F.col("_reason").isNull()).select(*[_quote(c) for c in [*ids, *features]])
        splits = df.rdd.getNumPartitions()
        if min(splits, groups if groups is not None else splits) < 2 * cores:
            good = good.repartition(target)  # too few real splits for the cores: spread the rows
        scored = good.mapInArrow(functools.partial(_score_partition, ref), _output_schema(df, pkg, ids))
        spark.sparkContext.setJobDescription("fourfold batch: score")
        scored.write.mode("overwrite").parquet(_uri(work / "out"))
        rows_out = _parts_rows(work / "out")
        # the histogram from the committed files' score column on the driver: exact whatever tasks were
        # retried, and a third of the job's time cheaper than 20 aggregates observed on every row in the JVM
        has_score = any(o.name == "score" and not o.shape for o in pkg.signature.outputs)
        hist = _file_histogram(work / "out", "score") if has_score else [0] * BINS
        counted = [f.rows for f in source.fragments]
        rows_in = sum(n or 0 for n in counted) if all(n is not None for n in counted) else None
        if rows_in is None or rows_out < rows_in:  # parquet footers say whether any row was rejected
            spark.sparkContext.setJobDescription("fourfold batch: quarantine")
            checked.where(F.col("_reason").isNotNull()).write.mode("overwrite").parquet(
                _uri(work / "quarantine")
            )
    moved = _move_parts(work / "out", staging)
    rejected = _move_parts(work / "quarantine", staging / "_quarantine")
    shutil.rmtree(work, ignore_errors=True)
    if moved != rows_out or (rows_in is not None and rows_out + rejected != rows_in):
        raise FourfoldError(
            f"the Spark job wrote {moved:,} of {rows_out:,} scored + {rejected:,} rejected rows for "
            f"{'?' if rows_in is None else format(rows_in, ',')} input rows; nothing was committed"
        )
    rows_in = rows_out + rejected
    return [{"rows_in": rows_in, "rows_out": rows_out, "rejected": rejected, "hist": hist}]
