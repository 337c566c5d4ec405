"""The local batch engine: score a table fragment by fragment in worker processes, never half-written.

    >>> # summary = run_batch(model="models:/fraud/production", input="users/", output="scores/",
    >>> #                     id_cols=("user_id",), partition="date=2025-04-15", workers=2)

* **Bounded memory**: each worker streams its fragment in record batches of ``batch_rows`` and writes
  them as it goes; a 10x larger input is 10x more fragments or batches, not 10x more memory.
* **Parallel**: one process per worker, each loading the model once; each worker reads, scores and
  writes its own fragments, so reading, scoring and writing overlap across workers.
* **Exactly once**: parts go to a staging directory next to the output; the partition appears by one
  rename after every fragment is done (``_SUCCESS`` inside). A re-run replaces the partition. With
  ``resume=True`` a run killed midway skips the fragments already done (``part-N.done`` markers).
* **Bad rows**: a row with a missing id or a null / NaN / infinite feature goes to ``_quarantine/`` with
  its reason; ``max_rejected`` (a count, or a fraction below 1) fails the job - and commits nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fourfold.batch.sources import Fragment, open_source
from fourfold.errors import FourfoldError
from fourfold.model.inputs import as_columns
from fourfold.model.package import ModelPackage
from fourfold.model.predictor import Predictor
from fourfold.registry.resolve import resolve

__all__ = ["BatchJob", "BatchSummary", "JobFailed", "run_batch"]

_BINS = 20


class JobFailed(FourfoldError):
    """The job ran but must not be committed (too many rejected rows); nothing was written."""

    status = 422


@dataclass
class _Counts:
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    hist: list[int] = field(default_factory=lambda: [0] * _BINS)

    def add(self, other: _Counts) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.rejected += other.rejected
        self.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]


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

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0

    def render(self) -> str:
        q = ", ".join(f"{k} {v:.3f}" for k, v in self.score_quantiles.items())
        return (
            f"{self.rows_in:,} rows in, {self.rows_out:,} scored, {self.rejected:,} rejected "
            f"({self.fragments} fragments, {self.resumed} resumed) in {self.seconds:.1f}s = "
            f"{self.rows_per_s:,.0f} rows/s on {self.runtime} -> {self.output}"
            + (f"\nscores: {q}" if q else "")
        )


# -- the worker side: one model per process ----------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(package_path: str, version: str | None, runtime: str, threads: int = 0) -> None:
    if threads:  # workers x threads must not oversubscribe the cores (set before the native libraries load)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    from fourfold.model.package import load_package

    pkg = load_package(package_path).with_version(version)
    _WORKER["predictor"] = Predictor(pkg, runtime=runtime)  # type: ignore[arg-type]


def _matrix_and_reasons(
    batch: pa.RecordBatch, predictor: Predictor, id_cols: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, ok, reasons)``: the batch's model matrix (built once), which rows can be scored, and for
    the others the first reason - all vectorized."""
    sig = predictor.signature
    columns = as_columns(batch, sig.feature_names)
    x = np.empty((batch.num_rows, len(sig.inputs)), dtype=predictor.input_dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: rejected below
        for j, f in enumerate(sig.inputs):
            x[:, j] = columns[f.name]
    ok = np.ones(batch.num_rows, dtype=bool)
    reasons = np.full(batch.num_rows, None, dtype=object)

    def reject(bad: np.ndarray, reason: str) -> None:
        fresh = bad & ok
        reasons[fresh] = reason
        ok[fresh] = False

    for col in id_cols:
        reject(np.asarray(batch.column(col).is_null().to_numpy(zero_copy_only=False)), f"missing id {col!r}")
    finite = np.isfinite(x)
    if not finite.all():
        for j, f in enumerate(sig.inputs):
            bad = np.isinf(x[:, j]) if f.nullable else ~finite[:, j]
            reject(bad, f"feature {f.name!r} is null, NaN or infinite")
    return x, ok, reasons


def _score_fragment(
    frag: Fragment, staging: str, id_cols: tuple[str, ...], batch_rows: int
) -> dict[str, Any]:
    predictor: Predictor = _WORKER["predictor"]
    root = Path(staging)
    part = root / f"part-{frag.index:05d}.parquet"
    quarantine = root / "_quarantine" / f"part-{frag.index:05d}.parquet"
    tmp, qtmp = part.with_suffix(".tmp"), quarantine.with_suffix(".tmp")
    counts = _Counts()
    writer: pq.ParquetWriter | None = None
    qwriter: pq.ParquetWriter | None = None
    version = predictor.version or ""
    try:
        for batch in frag.batches(batch_rows):
            counts.rows_in += batch.num_rows
            x, ok, reasons = _matrix_and_reasons(batch, predictor, id_cols)
            if not ok.all():
                bad = pa.Table.from_batches([batch]).filter(pa.array(~ok))
                bad = bad.append_column("_reason", pa.array(reasons[~ok].tolist(), pa.string()))
                if qwriter is None:
                    quarantine.parent.mkdir(exist_ok=True)
                    qwriter = pq.ParquetWriter(qtmp, bad.schema)
                qwriter.write_table(bad)
                counts.rejected += len(bad)
            good = pa.Table.from_batches([batch]).select(list(id_cols))
            if not ok.all():
                good, x = good.filter(pa.array(ok)), np.ascontiguousarray(x[ok])
            if good.num_rows == 0:
                continue
            out = predictor.predict_matrix(x)
            cols = {c: good.column(c) for c in id_cols}
            for name, values in out.items():
                cols[name] = pa.array(values)
            cols["model_version"] = pa.array([version] * good.num_rows, pa.string())
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            counts.rows_out += good.num_rows
            if "score" in out:
                hist, _ = np.histogram(out["score"], bins=_BINS, range=(0.0, 1.0))
                counts.hist = [a + int(b) for a, b in zip(counts.hist, hist, strict=True)]
    finally:
        if writer is not None:
            writer.close()
        if qwriter is not None:
            qwriter.close()
    if writer is not None:
        os.replace(tmp, part)
    if qwriter is not None:
        os.replace(qtmp, quarantine)
    done = root / f"part-{frag.index:05d}.done"
    _write_json(done, asdict(counts))  # the marker comes last: a fragment is done only once it exists
    return asdict(counts)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# -- the job ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchJob:
    model: str
    input: str
    output: str
    id_cols: tuple[str, ...] = ()
    partition: str | None = None
    workers: int = 1
    batch_rows: int = 65_536
    resume: bool = False
    max_rejected: float | None = None
    runtime: str = "auto"

    def destination(self) -> Path:
        """``output``, with ``{key}`` filled from ``partition`` (``date=2025-04-15``), or the partition
        as a ``key=value`` subdirectory when ``output`` has no template."""
        parts = dict(p.split("=", 1) for p in self.partition.split(",")) if self.partition else {}
        if "{" in self.output:
            try:
                return Path(self.output.format(**parts))
            except KeyError as exc:
                raise FourfoldError(
                    f"output template needs --partition {exc.args[0]}=...", status=400
                ) from None
        dest = Path(self.output)
        for key, value in parts.items():
            dest = dest / f"{key}={value}"
        return dest

    def run(self) -> BatchSummary:
        t0 = time.perf_counter()
        pkg = resolve(self.model)
        source = open_source(self.input)
        self._check_columns(pkg, source.schema)
        runtime = self._fastest_runtime(pkg) if self.runtime == "auto" else self.runtime
        dest = self.destination()
        staging = dest.parent / f".staging-{dest.name}"
        identity = {"model": pkg.uri, "version": pkg.version, "input": [f.path for f in source.fragments],
                    "id_cols": list(self.id_cols)}  # fmt: skip
        done = self._prepare(staging, identity)
        todo = [f for f in source.fragments if f.index not in done]
        totals = _Counts()
        for counts in done.values():
            totals.add(_Counts(**counts))
        args = (str(pkg.path), pkg.version, runtime, max(1, (os.cpu_count() or 1) // max(1, self.workers)))
        if self.workers <= 1 or len(todo) <= 1:
            _init_worker(*args[:3])
            results = [_score_fragment(f, str(staging), self.id_cols, self.batch_rows) for f in todo]
        else:
            # spawn, not fork: the parent holds thread pools (OpenMP, Arrow) a forked child could deadlock on
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_init_worker, initargs=args
            ) as pool:
                futures = [
                    pool.submit(_score_fragment, f, str(staging), self.id_cols, self.batch_rows) for f in todo
                ]
                results = [fut.result() for fut in futures]
        for counts in results:
            totals.add(_Counts(**counts))
        self._check_rejected(totals, staging)
        summary = BatchSummary(
            output=str(dest), fragments=len(source.fragments), resumed=len(done), rows_in=totals.rows_in,
            rows_out=totals.rows_out, rejected=totals.rejected, seconds=time.perf_counter() - t0,
            runtime=runtime, score_quantiles=_quantiles(totals.hist),
        )  # fmt: skip
        self._commit(staging, dest, summary)
        return summary

    def _check_columns(self, pkg: ModelPackage, schema: pa.Schema) -> None:
        names = set(schema.names)
        missing = [c for c in (*self.id_cols, *pkg.signature.feature_names) if c not in names]
        if missing:
            raise FourfoldError(
                f"the batch input lacks column(s) {', '.join(map(repr, missing))}; "
                f"it has: {', '.join(schema.names)}",
                status=422,
            )
        for f in pkg.signature.inputs:
            t = schema.field(f.name).type
            if not (
                pa.types.is_integer(t)
                or pa.types.is_floating(t)
                or pa.types.is_boolean(t)
                or pa.types.is_null(t)
            ):
                raise FourfoldError(f"input column {f.name!r} must be numeric, got {t}", status=422)

    @staticmethod
    def _fastest_runtime(pkg: ModelPackage) -> str:
        """Measure the verified runtimes on the package's sample, tiled to 20k rows; keep the fastest."""
        onnx = pkg.runtimes.get("onnx")
        if not (onnx and onnx.get("verified")):
            return "native"
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
        _write_json(job_file, identity)
        return {}

    def _check_rejected(self, totals: _Counts, staging: Path) -> None:
        limit = self.max_rejected
        if limit is None:
            return
        allowed = limit * totals.rows_in if limit < 1 else limit
        if totals.rejected > allowed:
            raise JobFailed(
                f"{totals.rejected:,} of {totals.rows_in:,} rows were rejected, "
                f"over --max-rejected {limit:g}; nothing was committed (see {staging / '_quarantine'})"
            )

    @staticmethod
    def _commit(staging: Path, dest: Path, summary: BatchSummary) -> None:
        for marker in [*staging.glob("part-*.done"), staging / "_job.json"]:
            marker.unlink()
        _write_json(staging / "_SUCCESS", asdict(summary))
        trash = None
        if dest.exists():  # a re-run replaces the partition
            trash = dest.parent / f".trash-{dest.name}-{uuid.uuid4().hex}"
            os.replace(dest, trash)
        os.replace(staging, dest)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def _quantiles(hist: list[int]) -> dict[str, float]:
    total = sum(hist)
    if not total:
        return {}
    cum = np.cumsum(hist) / total
    edges = np.linspace(0.0, 1.0, _BINS + 1)
    return {f"p{int(q * 100)}": float(edges[int(np.searchsorted(cum, q)) + 1]) for q in (0.5, 0.9, 0.99)}


def run_batch(**kwargs: Any) -> BatchSummary:
    """``BatchJob(**kwargs).run()``."""
    return BatchJob(**kwargs).run()
