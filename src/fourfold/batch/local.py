"""The local engine: one process (or ``workers`` spawned processes) streaming fragments through a
reader thread, one model thread per core and a writer thread, into the sink's staging directory.

    >>> # results = score_local(job, pkg, source, todo, staging, runtime)   # one count dict per fragment

Memory is bounded by the small queues between the threads (a few record batches), whatever the input
size; a fragment's part file is renamed into place and its ``part-N.done`` marker written only once all
its rows are in, so ``--resume`` after ``kill -9`` skips exactly the finished fragments.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from fourfold.batch.rows import Counts, assemble, prepare_batch
from fourfold.batch.sinks import write_json
from fourfold.batch.sources import Fragment, Source
from fourfold.model.package import ModelPackage
from fourfold.model.predictor import Predictor

if TYPE_CHECKING:
    from fourfold.batch.job import BatchJob

__all__ = ["score_fragments", "score_local"]

_QUEUE = 2  # batches in flight between reader, model and writer (the memory bound)
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


# -- the engine -------------------------------------------------------------------------------------------
def score_local(
    job: BatchJob, pkg: ModelPackage, source: Source, todo: list[Fragment], staging: Path, runtime: str
) -> list[dict[str, Any]]:
    """Score the fragments still ``todo`` into ``staging``; one count dict per fragment."""
    bar = _Progress(sum(f.rows or 0 for f in source.fragments), job.show_progress())
    try:
        if job.workers <= 1 or len(todo) <= 1:
            predictor = Predictor(pkg, runtime=runtime)  # type: ignore[arg-type]
            return score_fragments(
                todo, predictor, staging, job.id_cols, job.batch_rows, job.transform(pkg), bar.advance,
                threads=job.model_threads(1),
            )  # fmt: skip
        args = (str(pkg.path), pkg.version, runtime, job.model_threads(job.workers), job)
        # spawn, not fork: the parent holds thread pools (OpenMP, Arrow) a forked child could deadlock on
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            job.workers, mp_context=ctx, initializer=_init_worker, initargs=args
        ) as pool:
            futures = [pool.submit(_work, f, str(staging), job.id_cols, job.batch_rows) for f in todo]
            results = []
            for fut in futures:
                results.append(fut.result())
                bar.advance(results[-1]["rows_in"])
            return results
    finally:
        bar.close()


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
