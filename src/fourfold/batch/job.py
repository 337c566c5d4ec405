"""The batch job: open the sink and source, resume or start the staging, check the columns, pick the
runtime, run an engine, enforce ``max_rejected``, commit once.

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
* **Engines**: ``engine="local"`` (``local.py``) or ``"spark"`` (``spark.py``), same sources, sinks and
  row checks (``rows.py``); this module is the job around them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from fourfold.batch.rows import BINS, Counts
from fourfold.batch.sinks import open_sink, write_json
from fourfold.batch.sources import SQL_SCHEMES, open_source
from fourfold.errors import ConflictError, FourfoldError, InputError, RequestError
from fourfold.features.definitions import FeatureSet
from fourfold.model.package import ModelPackage
from fourfold.model.predictor import Predictor
from fourfold.registry.resolve import resolve

__all__ = ["BatchJob", "BatchSummary", "JobFailed", "run_batch"]


class JobFailed(FourfoldError):
    """The job ran but must not be committed (too many rejected rows); nothing was written."""

    status = 422


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
        spooled = self.input.startswith(SQL_SCHEMES)  # a query: spooled into staging, after _prepare
        source = None if spooled else open_source(self.input, query=self.query)
        if source is not None and "://" not in self.input:
            identity["files"] = [f.path for f in source.fragments]
        done = self._prepare(staging, identity)
        if source is None:
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
            from fourfold.batch.local import score_local

            results = score_local(self, pkg, source, todo, staging, runtime)
        for counts in results:
            totals.add(Counts(**counts))
        self._check_rejected(totals, staging)
        summary = BatchSummary(
            output=sink.destination, fragments=len(source.fragments), resumed=len(done),
            rows_in=totals.rows_in, rows_out=totals.rows_out, rejected=totals.rejected,
            seconds=time.perf_counter() - t0, runtime=runtime, score_quantiles=_quantiles(totals.hist),
            engine=self.engine, quarantine=str(sink.quarantine),
        )  # fmt: skip
        sink.commit(summary)
        return summary

    def feature_set(self, pkg: ModelPackage) -> FeatureSet | None:
        """``features`` (a features.yaml) when given, else the feature set stored in the model package."""
        if self.features is None:
            return pkg.features()
        import yaml

        from fourfold.features.definitions import DefinitionError

        try:
            return FeatureSet.load(Path(self.features))
        except (OSError, DefinitionError, yaml.YAMLError, ValueError, TypeError) as exc:
            raise RequestError(f"--features {self.features}: {exc}") from None

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

    def show_progress(self) -> bool:
        return sys.stderr.isatty() if self.progress is None else self.progress

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
            raise InputError(
                f"the batch input lacks column(s) {', '.join(map(repr, missing))}; "
                f"it has: {', '.join(schema.names)}{hint}",
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
                raise InputError(f"input column {f.name!r} must be numeric, got {t}")

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
                raise ConflictError(
                    f"{staging} belongs to another job (model, input or ids differ); run without --resume",
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


def _quantiles(hist: list[int]) -> dict[str, float]:
    total = sum(hist)
    if not total:
        return {}
    cum = np.cumsum(hist) / total
    edges = np.linspace(0.0, 1.0, BINS + 1)
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
