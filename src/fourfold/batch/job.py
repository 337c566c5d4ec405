"""The batch job: score a table fragment by fragment, pipelined, committed once, resumable.

    >>> # summary = run_batch(model="models:/fraud/production", input="users/", output="scores/",
    >>> #                     id_cols=("user_id",), partition="date=2025-04-15")

* **Bounded memory**: fragments stream in record batches of ``batch_rows`` through small bounded queues
  (read -> score -> write); a 10x larger input is 10x more batches, not 10x more memory.
* **Fast**: in one process (the default) a reader thread, one model thread per core and a writer thread
  overlap (XGBoost, LightGBM, ONNX Runtime and scikit-learn's trees release the GIL); with
  ``workers > 1`` each worker process loads the model once and runs ``cores / workers`` model threads -
  the choice for models whose predict holds the GIL. ``runtime="auto"`` measures the verified runtimes.
* **Exactly once**: parts go to the sink's staging directory and are published by one commit (a rename,
  or one PostgreSQL transaction - see ``sinks.py``). A re-run replaces the partition. With
  ``resume=True`` a run killed midway skips the fragments already done (``part-N.done`` markers).
* **Bad rows**: a row with a missing id or a null / NaN / infinite feature goes to ``_quarantine/`` with
  its reason; ``max_rejected`` (a count, or a fraction below 1) fails the job - and commits nothing.
* **Engines**: ``engine="local"`` (this module) or ``"spark"`` (``spark.py``), same sources and sinks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fourfold.batch.sinks import ParquetSink, Sink, open_sink, quarantine_dir, write_json
from fourfold.batch.sources import Fragment, Source, open_source
from fourfold.errors import FourfoldError
from fourfold.features.definitions import FeatureSet
from fourfold.model.inputs import as_columns
from fourfold.model.package import ModelPackage
from fourfold.model.predictor import Predictor
from fourfold.registry.resolve import resolve

__all__ = ["BatchJob", "BatchSummary", "JobFailed", "run_batch"]

_BINS = 20
_QUEUE = 2  # batches in flight between reader, model and writer (the memory bound)


class JobFailed(FourfoldError):
    """The job ran but must not be committed (too many rejected rows); nothing was written."""

    status = 422


@dataclass
class Counts:
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    hist: list[int] = field(default_factory=lambda: [0] * _BINS)

    def add(self, other: Counts) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.rejected += other.rejected
        self.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]

    def add_scores(self, scores: np.ndarray) -> None:
        hist, _ = np.histogram(scores, bins=_BINS, range=(0.0, 1.0))
        self.hist = [a + int(b) for a, b in zip(self.hist, hist, strict=True)]


@dataclass(frozen=True)
class BatchSummary:
    output: str
    fragments: int
    resumed: int
    rows_in: int
    rows_out: int
    rejected: int
    seconds: float
    runtime: str
    score_quantiles: dict[str, float]
    engine: str = "local"
    quarantine: str | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0

    def render(self) -> str:
        q = ", ".join(f"{k} {v:.3f}" for k, v in self.score_quantiles.items())
        return (
            f"{self.rows_in:,} rows in, {self.rows_out:,} scored, {self.rejected:,} rejected "
            f"({self.fragments} fragments, {self.resumed} resumed) in {self.seconds:.1f}s = "
            f"{self.rows_per_s:,.0f} rows/s on {self.runtime} ({self.engine}) -> {self.output}"
            + (f"\nscores: {q}" if q else "")
            + (f"\nrejected rows: {self.quarantine}" if self.quarantine and self.rejected else "")
        )


# -- scoring one record batch ------------------------------------------------------------------------------
def check_rows(
    batch: pa.RecordBatch, predictor: Predictor, id_cols: Sequence[str], required: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(x, ok, reasons)``: the batch's model matrix (built once), which rows can be scored, and for
    the others the first reason (``None`` when every row is fine) - all vectorized."""
    sig = predictor.signature
    columns = as_columns(batch, sig.feature_names)
    x = np.empty((batch.num_rows, len(sig.inputs)), dtype=predictor.input_dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: rejected below
        for j, f in enumerate(sig.inputs):
            x[:, j] = columns[f.name]
    ok = np.ones(batch.num_rows, dtype=bool)
    reasons: np.ndarray | None = None

    def reject(bad: np.ndarray, reason: str) -> None:
        nonlocal reasons
        fresh = bad & ok
        if fresh.any():
            if reasons is None:
                reasons = np.full(batch.num_rows, None, dtype=object)
            reasons[fresh] = reason
            ok[fresh] = False

    for col in id_cols:
        ids = batch.column(col)
        if ids.null_count:
            reject(np.asarray(ids.is_null().to_numpy(zero_copy_only=False)), f"missing id {col!r}")
    for col in required:  # the entity key and as-of time windowed features are computed for
        values = batch.column(col)
        if values.null_count:
            reject(np.asarray(values.is_null().to_numpy(zero_copy_only=False)), f"missing {col!r}")
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf, 1e308 + 1e308: caught just below
        all_finite = bool(np.isfinite(x.sum(axis=1)).all())
    if not all_finite:  # one pass; the per-feature detail only when needed
        finite = np.isfinite(x)
        for j, f in enumerate(sig.inputs):
            bad = np.isinf(x[:, j]) if f.nullable else ~finite[:, j]
            reject(bad, f"feature {f.name!r} is null, NaN or infinite")
    return x, ok, reasons


@dataclass
class Prepared:
    """A record batch checked and ready for the model: the good rows' ids and matrix, the bad rows."""

    rows_in: int
    ids: pa.Table  # the good rows' id columns
    x: np.ndarray | None  # the good rows' model matrix (None: no good rows)
    bad: pa.Table | None  # the bad rows, every column + ``_reason``


def prepare_batch(
    batch: pa.RecordBatch, predictor: Predictor, id_cols: Sequence[str], required: Sequence[str] = ()
) -> Prepared:
    x, ok, reasons = check_rows(batch, predictor, id_cols, required)
    ids = pa.Table.from_batches([batch.select(list(id_cols))])
    if reasons is None:
        return Prepared(batch.num_rows, ids, x, None)
    keep = pa.array(ok)
    bad = pa.Table.from_batches([batch]).filter(pa.array(~ok))
    bad = bad.append_column("_reason", pa.array(reasons[~ok].tolist(), pa.string()))
    good = np.ascontiguousarray(x[ok]) if ok.any() else None
    return Prepared(batch.num_rows, ids.filter(keep), good, bad)


def assemble(
    prep: Prepared, out: dict[str, np.ndarray] | None, version: str, counts: Counts
) -> pa.Table | None:
    """The output rows (ids, the model's outputs, ``model_version``); ``counts`` updated."""
    counts.rows_in += prep.rows_in
    counts.rejected += prep.bad.num_rows if prep.bad is not None else 0
    if out is None:
        return None
    table = prep.ids
    for name, values in out.items():
        table = table.append_column(name, _column(values))
    table = table.append_column("model_version", pa.repeat(pa.scalar(version, pa.string()), table.num_rows))
    counts.rows_out += table.num_rows
    if "score" in out:
        counts.add_scores(out["score"])
    return table


def _column(values: np.ndarray) -> pa.Array:
    """A model output as an Arrow column: 1-D as is, 2-D (class probabilities) as ``list<double>``."""
    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float64).ravel())
    offsets = pa.array(np.arange(0, flat.__len__() + 1, values.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


def score_batch(
    batch: pa.RecordBatch, predictor: Predictor, id_cols: Sequence[str], counts: Counts,
    required: Sequence[str] = (),
) -> tuple[pa.Table | None, pa.Table | None]:  # fmt: skip
    """One batch, start to end in the calling thread: ``(output rows, bad rows)``."""
    prep = prepare_batch(batch, predictor, id_cols, required)
    out = predictor.predict_matrix(prep.x) if prep.x is not None else None
    return assemble(prep, out, predictor.version or "", counts), prep.bad


# -- one process's pipeline: reader thread -> model threads -> writer thread ------------------------------
_END = object()


class _PartWriter:
    """Writes one fragment's scored and quarantined rows to ``.tmp`` files; ``finish`` renames them and
    writes the ``part-N.done`` marker (last: a fragment is done only once its marker exists)."""

    def __init__(self, staging: Path, frag: Fragment) -> None:
        self.part = staging / f"part-{frag.index:05d}.parquet"
        self.quarantine = staging / "_quarantine" / f"part-{frag.index:05d}.parquet"
        self.done = staging / f"part-{frag.index:05d}.done"
        self.writer: pq.ParquetWriter | None = None
        self.qwriter: pq.ParquetWriter | None = None
        self.counts = Counts()

    def write(self, table: pa.Table | None, bad: pa.Table | None) -> None:
        if bad is not None:
            if self.qwriter is None:
                self.quarantine.parent.mkdir(exist_ok=True)
                self.qwriter = pq.ParquetWriter(self.quarantine.with_suffix(".tmp"), bad.schema)
            self.qwriter.write_table(bad)
        if table is not None:
            if self.writer is None:  # dictionaries only where values repeat: ids and scores rarely do,
                # and trying them costs half the encoding time for a larger file
                repeats = [c for c in ("model_version", "label") if c in table.column_names]
                self.writer = pq.ParquetWriter(
                    self.part.with_suffix(".tmp"), table.schema, use_dictionary=repeats
                )
            self.writer.write_table(table)

    def close(self) -> None:
        for w in (self.writer, self.qwriter):
            if w is not None:
                w.close()

    def finish(self) -> dict[str, Any]:
        self.close()
        if self.writer is not None:
            os.replace(self.part.with_suffix(".tmp"), self.part)
        if self.qwriter is not None:
            os.replace(self.quarantine.with_suffix(".tmp"), self.quarantine)
        write_json(self.done, asdict(self.counts))
        return asdict(self.counts)


class _Pipeline:
    """Read -> score -> write for one process. The reader thread decodes, transforms and checks batches
    and builds their matrices; ``threads`` model threads each score whole batches with one native thread
    (no OpenMP barrier waits on a core the reader or writer is using: every core stays busy); the writer
    thread puts the batches back in input order, assembles and encodes them. Queues are small and
    bounded: memory is a few batches whatever the input size. The first error anywhere stops it all."""

    def __init__(
        self, predictor: Predictor, staging: Path, id_cols: Sequence[str], batch_rows: int,
        transform: Callable[[pa.RecordBatch], pa.RecordBatch] | None, progress: Callable[[int], None],
        threads: int,
    ) -> None:  # fmt: skip
        self.predictor, self.staging, self.id_cols, self.batch_rows = predictor, staging, id_cols, batch_rows
        self.transform, self.progress, self.threads = transform, progress, max(1, threads)
        self.required: Sequence[str] = getattr(transform, "required", ())
        self.inq: queue.Queue[Any] = queue.Queue(self.threads + _QUEUE)
        self.outq: queue.Queue[Any] = queue.Queue(self.threads + _QUEUE)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.results: list[dict[str, Any]] = []

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.stop.set()

    def read(self, frags: Sequence[Fragment]) -> None:
        seq = 0
        try:
            for frag in frags:
                for batch in frag.batches(self.batch_rows):
                    if self.stop.is_set():
                        return
                    batch = self.transform(batch) if self.transform else batch
                    self.inq.put(
                        (seq, frag, prepare_batch(batch, self.predictor, self.id_cols, self.required))
                    )
                    seq += 1
                self.inq.put((seq, frag, _END))
                seq += 1
        except BaseException as exc:
            self.fail(exc)
        finally:
            for _ in range(self.threads):
                self.inq.put(None)

    def score(self) -> None:
        try:
            while (item := self.inq.get()) is not None:
                seq, frag, prep = item
                out = None
                if prep is not _END and prep.x is not None and not self.stop.is_set():
                    try:
                        out = self.predictor.predict_matrix(prep.x)
                    except BaseException as exc:
                        self.fail(exc)
                self.outq.put((seq, frag, prep, out))
        finally:
            self.outq.put(None)

    def write(self) -> None:
        parts: dict[int, _PartWriter] = {}
        pending: dict[int, tuple[Fragment, Any, Any]] = {}
        version, following, running = self.predictor.version or "", 0, self.threads
        try:
            while running:
                item = self.outq.get()
                if item is None:
                    running -= 1
                    continue
                pending[item[0]] = item[1:]
                while following in pending and not self.stop.is_set():  # input order, whatever finished first
                    frag, prep, out = pending.pop(following)
                    following += 1
                    w = parts.get(frag.index) or parts.setdefault(frag.index, _PartWriter(self.staging, frag))
                    if prep is _END:
                        self.results.append(parts.pop(frag.index).finish())
                        self.progress(w.counts.rows_in)
                    else:
                        w.write(assemble(prep, out, version, w.counts), prep.bad)
        except BaseException as exc:
            self.fail(exc)
            while running:  # keep draining so no model thread blocks on a dead writer
                running -= self.outq.get() is None
        finally:
            for w in parts.values():
                w.close()

    def run(self, frags: Sequence[Fragment]) -> list[dict[str, Any]]:
        threads = [threading.Thread(target=self.read, args=(frags,), daemon=True, name="ff-read")]
        threads += [
            threading.Thread(target=self.score, daemon=True, name=f"ff-model-{i}")
            for i in range(self.threads)
        ]
        threads.append(threading.Thread(target=self.write, daemon=True, name="ff-write"))
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.1)
        except BaseException as exc:  # Ctrl-C: stop the reader, let the rest drain
            self.fail(exc)
            raise
        if self.errors:
            raise self.errors[0]
        return self.results


def score_fragments(
    frags: Sequence[Fragment], predictor: Predictor, staging: Path, id_cols: Sequence[str], batch_rows: int,
    transform: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    progress: Callable[[int], None] | None = None, threads: int = 1,
) -> list[dict[str, Any]]:  # fmt: skip
    """Score ``frags`` into ``staging`` (see :class:`_Pipeline`); one count dict per fragment."""
    if threads > 1:
        predictor.set_threads(1)
    pipeline = _Pipeline(
        predictor, staging, id_cols, batch_rows, transform, progress or (lambda n: None), threads
    )
    return pipeline.run(frags)


# -- worker processes (workers > 1) ------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(package_path: str, version: str | None, runtime: str, threads: int, job: BatchJob) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before native libs load
        os.environ[var] = "1"  # the worker's model threads run one native thread each
    from fourfold.model.package import load_package

    pkg = load_package(package_path).with_version(version)
    _WORKER["predictor"] = Predictor(pkg, runtime=runtime)  # type: ignore[arg-type]
    _WORKER["transform"] = job.transform(pkg)
    _WORKER["threads"] = threads


def _work(frag: Fragment, staging: str, id_cols: tuple[str, ...], batch_rows: int) -> dict[str, Any]:
    [result] = score_fragments(
        [frag], _WORKER["predictor"], Path(staging), id_cols, batch_rows, _WORKER["transform"],
        threads=_WORKER["threads"],
    )  # fmt: skip
    return result


# -- the job -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchJob:
    model: str
    input: str
    output: str
    id_cols: tuple[str, ...] = ()
    partition: str | None = None
    workers: int = 1
    threads: int | None = None  # model threads per process (default: the cores / workers)
    batch_rows: int = 65_536
    resume: bool = False
    max_rejected: float | None = None
    runtime: str = "auto"
    engine: Literal["local", "spark"] = "local"
    spark_master: str = "local[*]"
    query: str | None = None  # the SQL for a postgresql:// or duckdb:// input
    table: str | None = None  # the table for a postgresql:// output
    quarantine: str | None = None  # where a non-directory sink's rejected rows go
    features: str | None = None  # a features.yaml instead of the one in the model package
    events: str | None = None  # the event log windowed features are computed from
    timestamp: str | None = None  # the rows' as-of time column for windowed features
    as_of: str | None = None  # or one as-of time for every row (ISO 8601)
    progress: bool | None = None  # a progress line on stderr (default: when stderr is a terminal)

    def run(self) -> BatchSummary:
        t0 = time.perf_counter()
        pkg = resolve(self.model)
        sink = open_sink(self)
        staging = sink.staging
        identity = {"model": pkg.uri, "version": pkg.version, "input": self.input, "query": self.query,
                    "id_cols": list(self.id_cols), "events": self.events, "as_of": self.as_of,
                    "engine": self.engine}  # fmt: skip
        if self.query is None and "://" not in self.input:
            identity["files"] = [f.path for f in open_source(self.input).fragments]
        done = self._prepare(staging, identity)
        source = open_source(
            self.input, query=self.query, spool=staging / "_input", rows=self.batch_rows * 16
        )
        self._check_columns(pkg, source.schema)
        runtime = self._fastest_runtime(pkg) if self.runtime == "auto" else self.runtime
        totals = Counts()
        for counts in done.values():
            totals.add(Counts(**counts))
        todo = [f for f in source.fragments if f.index not in done]
        if self.engine == "spark":
            from fourfold.batch.spark import score_on_spark

            results = score_on_spark(self, pkg, source, staging, runtime)
        else:
            results = self._score_local(pkg, source, todo, staging, runtime)
        for counts in results:
            totals.add(Counts(**counts))
        self._check_rejected(totals, staging)
        summary = BatchSummary(
            output=sink.destination, fragments=len(source.fragments), resumed=len(done),
            rows_in=totals.rows_in, rows_out=totals.rows_out, rejected=totals.rejected,
            seconds=time.perf_counter() - t0, runtime=runtime, score_quantiles=_quantiles(totals.hist),
            engine=self.engine, quarantine=self._quarantine_path(sink),
        )  # fmt: skip
        sink.commit(summary)
        return summary

    def _score_local(
        self, pkg: ModelPackage, source: Source, todo: list[Fragment], staging: Path, runtime: str
    ) -> list[dict[str, Any]]:
        bar = _Progress(sum(f.rows or 0 for f in source.fragments), self._show_progress())
        try:
            if self.workers <= 1 or len(todo) <= 1:
                predictor = Predictor(pkg, runtime=runtime)  # type: ignore[arg-type]
                return score_fragments(
                    todo, predictor, staging, self.id_cols, self.batch_rows, self.transform(pkg), bar.advance,
                    threads=self.model_threads(1),
                )  # fmt: skip
            args = (str(pkg.path), pkg.version, runtime, self.model_threads(self.workers), self)
            # spawn, not fork: the parent holds thread pools (OpenMP, Arrow) a forked child could deadlock on
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_init_worker, initargs=args
            ) as pool:
                futures = [pool.submit(_work, f, str(staging), self.id_cols, self.batch_rows) for f in todo]
                results = []
                for fut in futures:
                    results.append(fut.result())
                    bar.advance(results[-1]["rows_in"])
                return results
        finally:
            bar.close()

    def feature_set(self, pkg: ModelPackage) -> FeatureSet | None:
        """``features`` (a features.yaml) when given, else the feature set stored in the model package."""
        if self.features is None:
            return pkg.features()
        import yaml

        from fourfold.features.definitions import DefinitionError

        try:
            return FeatureSet.load(Path(self.features))
        except (OSError, DefinitionError, yaml.YAMLError, ValueError, TypeError) as exc:
            raise FourfoldError(f"--features {self.features}: {exc}", status=400) from None

    def model_threads(self, processes: int) -> int:
        """Model threads per process: ``threads``, else the cores shared out between the processes."""
        return self.threads or max(1, (os.cpu_count() or 1) // processes)

    def transform(self, pkg: ModelPackage) -> Callable[[pa.RecordBatch], pa.RecordBatch] | None:
        """What a record batch goes through before scoring: the windowed features, when the model's
        feature set has any, computed point-in-time from ``events`` (``windowed.py``)."""
        fs = self.feature_set(pkg)
        if fs is None or not fs.windowed or not self.events:
            return None  # windowed features, if any, are columns of the input
        from fourfold.batch.windowed import WindowedTransform

        return WindowedTransform.for_job(self, fs)

    def _show_progress(self) -> bool:
        return sys.stderr.isatty() if self.progress is None else self.progress

    def _quarantine_path(self, sink: Sink) -> str:
        if isinstance(sink, ParquetSink):
            return str(sink.dest / "_quarantine")
        return str(quarantine_dir(self, sink.staging))

    def _check_columns(self, pkg: ModelPackage, schema: pa.Schema) -> None:
        names = set(schema.names)
        fs = self.feature_set(pkg)
        computed = {f.name for f in fs.windowed} if fs is not None and self.events else set()
        needed = [*self.id_cols, *(n for n in pkg.signature.feature_names if n not in computed)]
        if computed and fs is not None:
            from fourfold.features.events import single_source

            key, ts = single_source(fs)
            needed += [key] + ([] if self.as_of else [self.timestamp or ts])
        missing = [c for c in dict.fromkeys(needed) if c not in names]
        if missing:
            hint = (
                "; the model has windowed features: pass --events LOG to compute them"
                if fs is not None and fs.windowed and not self.events
                else ""
            )
            raise FourfoldError(
                f"the batch input lacks column(s) {', '.join(map(repr, missing))}; "
                f"it has: {', '.join(schema.names)}{hint}",
                status=422,
            )
        for f in pkg.signature.inputs:
            if f.name in computed:
                continue
            t = schema.field(f.name).type
            if not (
                pa.types.is_integer(t)
                or pa.types.is_floating(t)
                or pa.types.is_boolean(t)
                or pa.types.is_null(t)
                or pa.types.is_decimal(t)
            ):
                raise FourfoldError(f"input column {f.name!r} must be numeric, got {t}", status=422)

    @staticmethod
    def _fastest_runtime(pkg: ModelPackage) -> str:
        """Measure the verified runtimes on the package's sample, tiled to 20k rows; keep the fastest.
        The verdict is cached per package content and core count in ``$FOURFOLD_HOME/cache``."""
        onnx = pkg.runtimes.get("onnx")
        if not (onnx and onnx.get("verified")):
            return "native"
        from fourfold.settings import Settings

        files = json.dumps(pkg.manifest.get("files", {}), sort_keys=True)
        key = hashlib.sha256(f"{files}|{os.cpu_count()}".encode()).hexdigest()[:20]
        cache = Settings().home / "cache" / f"fastest-runtime-{key}.json"
        try:
            return str(json.loads(cache.read_text())["runtime"])
        except (OSError, ValueError, KeyError):
            pass
        best = _measure_runtimes(pkg)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, {"runtime": best})
        except OSError:  # a read-only home only costs the measurement next time
            pass
        return best

    def _prepare(self, staging: Path, identity: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """Fresh staging, or (resume) the fragments an earlier run of the same job already finished."""
        job_file = staging / "_job.json"
        if self.resume and job_file.exists():
            if json.loads(job_file.read_text()) != identity:
                raise FourfoldError(
                    f"{staging} belongs to another job (model, input or ids differ); run without --resume",
                    status=409,
                )
            return {int(p.name[5:10]): json.loads(p.read_text()) for p in staging.glob("part-*.done")}
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        write_json(job_file, identity)
        return {}

    def _check_rejected(self, totals: Counts, staging: Path) -> None:
        limit = self.max_rejected
        if limit is None:
            return
        allowed = limit * totals.rows_in if limit < 1 else limit
        if totals.rejected > allowed:
            raise JobFailed(
                f"{totals.rejected:,} of {totals.rows_in:,} rows were rejected, "
                f"over --max-rejected {limit:g}; nothing was committed (see {staging / '_quarantine'})"
            )


def _measure_runtimes(pkg: ModelPackage) -> str:
    sample = pkg.sample()
    if sample is None or sample.num_rows == 0:
        return "onnx"
    best, best_s = "native", float("inf")
    for name in ("native", "onnx"):
        p = Predictor(pkg, runtime="native" if name == "native" else "onnx")
        x = p.matrix(sample)
        x = np.ascontiguousarray(np.tile(x, (max(1, 20_000 // len(x)), 1)), dtype=p.input_dtype)
        p.predict_matrix(x[:100])
        start = time.perf_counter()
        p.predict_matrix(x)
        elapsed = time.perf_counter() - start
        if elapsed < best_s:
            best, best_s = name, elapsed
    return best


class _Progress:
    """``scored 1,200,000 / 2,000,000 rows  410,000 rows/s  ETA 2s`` on stderr, at most 5 times a second."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.rows = total, enabled, 0
        self.t0 = self.last = time.perf_counter()

    def advance(self, rows: int) -> None:
        self.rows += rows
        now = time.perf_counter()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        self._show(now)

    def _show(self, now: float) -> None:
        rate = self.rows / max(now - self.t0, 1e-9)
        line = (
            f"scored {self.rows:,}"
            + (f" / {self.total:,}" if self.total else "")
            + f" rows  {rate:,.0f} rows/s"
        )
        if self.total and rate:
            line += f"  ETA {max(0.0, (self.total - self.rows) / rate):.0f}s"
        sys.stderr.write("\r" + line.ljust(72))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.rows:
            self._show(time.perf_counter())
            sys.stderr.write("\n")


def _quantiles(hist: list[int]) -> dict[str, float]:
    total = sum(hist)
    if not total:
        return {}
    cum = np.cumsum(hist) / total
    edges = np.linspace(0.0, 1.0, _BINS + 1)
    return {f"p{int(q * 100)}": float(edges[int(np.searchsorted(cum, q)) + 1]) for q in (0.5, 0.9, 0.99)}


def bound_memory() -> None:
    """For a process that runs batch jobs (``fourfold batch``): Arrow's jemalloc pool returns freed pages
    at once instead of keeping them for reuse, so the process's footprint tracks the few batches in
    flight, not the input's size. (A library caller keeps its own allocator settings.)"""
    with contextlib.suppress(NotImplementedError, pa.ArrowNotImplementedError):  # no jemalloc in this build
        pa.jemalloc_set_decay_ms(0)


def run_batch(**kwargs: Any) -> BatchSummary:
    """``BatchJob(**kwargs).run()``."""
    return BatchJob(**kwargs).run()


def iter_batches(frags: Sequence[Fragment], batch_rows: int) -> Iterator[pa.RecordBatch]:
    for frag in frags:
        yield from frag.batches(batch_rows)
