"""The batch job: the one module that knows every part - it resolves the model, checks the input and
the output, stages, runs an engine, enforces ``max_rejected`` and commits once.

    >>> # summary = run_batch(model="models:/fraud/production", input="users/", output="scores/",
    >>> #                     id_cols=("user_id",), partition="date=2025-04-15")
    >>> # summary = run_batch(BatchOptions(...))

The order is the point: everything that can be refused is refused before anything is written - the
options (``options.py``), the model and its runtime, the sink's arguments and connection, the input's
columns (``inputs.py``), the output guard (``guard.py``: never replace what fourfold did not write), the
event log's index. Then the staging directory (``staging.py``: fresh, or ``--resume`` with the same
identity), the engine (``engine.py``: local or Spark), the counts, one commit by the sink. On a failure
the staging directory this run created is removed - unless it holds what a resumed run would reuse
(finished fragments, a spooled query, the quarantine of a job over ``--max-rejected``).

Nothing imports this module but ``fourfold.batch`` and the CLI: the parts get explicit values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pyarrow as pa

from fourfold.batch.engine import Engine, Plan
from fourfold.batch.inputs import BatchInputs
from fourfold.batch.options import BatchOptions
from fourfold.batch.rows import Counts
from fourfold.batch.sinks import open_sink
from fourfold.batch.sources import Source, open_source
from fourfold.batch.sql import database_file
from fourfold.batch.staging import Staging
from fourfold.batch.summary import BatchSummary
from fourfold.batch.windowed import Windowed
from fourfold.errors import (
    InputError,
    InvalidOptionError,
    JobFailed,
    RequestError,
    UnavailableError,
)
from fourfold.features.definitions import FeatureSet, load_features_file
from fourfold.features.stores.base import redact_url
from fourfold.model.package import MANIFEST, ModelPackage, sha256_file
from fourfold.model.predictor import Predictor
from fourfold.registry.resolve import resolve

__all__ = ["bound_memory", "run_batch"]


def run_batch(options: BatchOptions | None = None, /, **kwargs: Any) -> BatchSummary:
    """Run one batch job: ``run_batch(BatchOptions(...))`` or ``run_batch(model=..., input=..., ...)``
    (the fields of :class:`~fourfold.batch.options.BatchOptions`; with both, the keywords replace the
    options' fields)."""
    if options is None:
        options = BatchOptions(**kwargs)
    elif kwargs:
        options = dataclasses.replace(options, **kwargs)
    return _Job(options).run()


class _Job:
    def __init__(self, options: BatchOptions) -> None:
        self.o = options

    def run(self) -> BatchSummary:
        o, t0 = self.o, time.perf_counter()
        pkg = resolve(o.model)
        predictor = Predictor(pkg, runtime=o.runtime)  # type: ignore[arg-type]  # checked by the options
        fs = _feature_set(o.features, pkg)
        inputs = BatchInputs.for_model(pkg.signature, fs, o.id_cols, events=o.events is not None,
                                       timestamp=o.timestamp, as_of=o.as_of is not None)  # fmt: skip
        if o.events is not None and not inputs.assembly.computes:
            raise InvalidOptionError(
                f"--events {o.events}: {pkg.label} takes no windowed feature of its feature set; "
                "run without --events"
            )
        sink = open_sink(o.output, partition=o.partition_values, model_name=pkg.name, id_cols=o.id_cols,
                         table=o.table, quarantine=o.quarantine,
                         namespace=fs.entity_namespace if fs is not None else None)  # fmt: skip
        source = None if o.sql_input else open_source(o.input)
        if source is not None:
            inputs.check_schema(source.schema)
        events = open_source(o.events) if o.events is not None else None
        sink.guard(self._protected(pkg, source, events), overwrite=o.overwrite)
        identity = self._identity(pkg, predictor.runtime, source, events)
        if events is not None and inputs.assembly.key is not None:
            assert fs is not None
            windowed = Windowed.build(events, fs, tuple(inputs.assembly.computed), inputs.assembly.key,
                                      inputs.timestamp, o.as_of_ms)  # fmt: skip
            inputs = dataclasses.replace(inputs, windowed=windowed)

        staging = Staging(sink.staging)
        done = staging.open(identity, resume=o.resume)
        try:
            if source is None:  # a query, spooled into the staging directory (a resumed run reuses it)
                source = open_source(o.input, query=o.query, spool=staging.path / "_input",
                                     rows=o.batch_rows * 16)  # fmt: skip
                inputs.check_schema(source.schema)
            todo = tuple(f for f in source.fragments if f.index not in done)
            plan = Plan(predictor, source, todo, staging.path, inputs, o.batch_rows)
            totals = Counts()
            for counts in [*done.values(), *self._engine().run(plan)]:
                totals.add(counts)
            _check_rejected(o.max_rejected, totals, staging.path)
            summary = BatchSummary(
                output=sink.destination, fragments=len(source.fragments), resumed=len(done),
                rows_resumed=sum(c.rows_in for c in done.values()), rows_in=totals.rows_in,
                rows_out=totals.rows_out, rejected=totals.rejected, seconds=time.perf_counter() - t0,
                runtime=predictor.runtime, score_quantiles=totals.hist.quantiles(), engine=o.engine,
                quarantine=str(sink.quarantine),
            )  # fmt: skip
            sink.commit(summary)
            return summary
        except BaseException as exc:
            if staging.created and not _resumable(exc, staging):
                staging.remove()
            if isinstance(exc, OSError):
                raise UnavailableError(f"the batch job failed: {exc}") from exc
            if isinstance(exc, BrokenProcessPool):
                raise UnavailableError(
                    "a batch worker process died (out of memory?); re-run with --resume to keep the "
                    "finished fragments"
                ) from exc
            raise

    def _engine(self) -> Engine:
        o = self.o
        if o.engine == "spark":
            from fourfold.batch.spark import SparkEngine

            return SparkEngine(o.spark_master)
        from fourfold.batch.local import LocalEngine

        return LocalEngine(o.workers, o.threads, o.show_progress())

    def _protected(self, pkg: ModelPackage, source: Source | None, events: Source | None) -> list[Path]:
        """Every local path the job reads: no output may replace, contain or sit inside one."""
        paths = [pkg.path]
        for src in (source, events):
            if src is not None:
                paths += src.local_paths()
        db = database_file(self.o.input)
        if db is not None:
            paths.append(db)
        if self.o.features is not None:
            paths.append(Path(self.o.features))
        return paths

    def _identity(
        self, pkg: ModelPackage, runtime: str, source: Source | None, events: Source | None
    ) -> dict[str, Any]:
        """What a resumed run must share with the run it resumes (``staging.py``): the model's exact
        package, the runtime that scored, every input file's size and mtime, ids, the windowed inputs."""
        o = self.o
        features = None if o.features is None else hashlib.sha256(Path(o.features).read_bytes()).hexdigest()
        return {
            "model": o.model, "version": pkg.version, "package": sha256_file(pkg.path / MANIFEST),
            "runtime": runtime, "engine": o.engine, "input": redact_url(o.input), "query": o.query,
            "files": None if source is None else [f.fingerprint() for f in source.fragments],
            "id_cols": list(o.id_cols), "features": features, "events": o.events,
            "events_files": None if events is None else [f.fingerprint() for f in events.fragments],
            "timestamp": o.timestamp, "as_of": o.as_of_ms,
        }  # fmt: skip


def _feature_set(features: str | None, pkg: ModelPackage) -> FeatureSet | None:
    """``features`` (a features.yaml) when given, else the feature set stored in the model package."""
    if features is None:
        return pkg.features()
    return load_features_file(features, needs=pkg.signature.feature_names, model=pkg.label,
                              label=f"--features {features}")  # fmt: skip


def _check_rejected(limit: float | None, totals: Counts, staging: Path) -> None:
    if limit is None:
        return
    allowed = limit * totals.rows_in if limit < 1 else limit
    if totals.rejected > allowed:
        raise JobFailed(
            f"{totals.rejected:,} of {totals.rows_in:,} rows were rejected, "
            f"over --max-rejected {limit:g}; nothing was committed (see {staging / '_quarantine'})"
        )


def _resumable(exc: BaseException, staging: Staging) -> bool:
    """Whether a failed run's staging directory is worth keeping for ``--resume`` (or for reading)."""
    if isinstance(exc, JobFailed):
        return True  # its _quarantine/ is the report, and a resume commits without scoring again
    if isinstance(exc, InputError | RequestError):
        return False  # the input or an option must change first, and a changed input is not resumed
    return staging.has_progress()


def bound_memory() -> None:
    """For a process that runs batch jobs (``fourfold batch``): Arrow's jemalloc pool returns freed pages
    at once instead of keeping them for reuse, so the process's footprint tracks the few batches in
    flight, not the input's size. (A library caller keeps its own allocator settings.)"""
    with contextlib.suppress(NotImplementedError, pa.ArrowNotImplementedError):  # no jemalloc in this build
        pa.jemalloc_set_decay_ms(0)
