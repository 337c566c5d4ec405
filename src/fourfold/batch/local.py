"""The local engine: one process (or ``workers`` spawned processes) streaming fragments through a
reader thread, one model thread per core and a writer thread, into the job's staging directory.

    >>> # counts = LocalEngine(workers=1, threads=None, progress=False).run(plan)   # one per fragment

Memory is bounded by the small queues between the threads (a few record batches), whatever the input
size; a fragment's part file is renamed into place and its ``part-N.done`` marker written only once all
its rows are in, so ``--resume`` after ``kill -9`` skips exactly the finished fragments. Worker processes
load the model once each and, for windowed features, the index the job saved (never the event log).
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fourfold.batch.engine import Plan
from fourfold.batch.inputs import BatchInputs
from fourfold.batch.rows import Counts, assemble, prepare_batch
from fourfold.batch.sources import Fragment
from fourfold.batch.staging import done_marker, write_json
from fourfold.batch.windowed import SavedWindowed
from fourfold.model.predictor import Predictor

__all__ = ["LocalEngine", "score_fragments"]

_QUEUE = 2  # batches in flight between reader, model and writer (the memory bound)
_END = object()


class _PartWriter:
    """Writes one fragment's scored and quarantined rows to ``.tmp`` files; ``finish`` renames them and
    writes the ``part-N.done`` marker (last: a fragment is done only once its marker exists)."""

    def __init__(self, staging: Path, frag: Fragment) -> None:
        self.part = staging / f"part-{frag.index:05d}.parquet"
        self.quarantine = staging / "_quarantine" / f"part-{frag.index:05d}.parquet"
        self.done = done_marker(staging, frag.index)
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

    def finish(self) -> Counts:
        self.close()
        if self.writer is not None:
            os.replace(self.part.with_suffix(".tmp"), self.part)
        if self.qwriter is not None:
            os.replace(self.quarantine.with_suffix(".tmp"), self.quarantine)
        write_json(self.done, self.counts.to_json())
        return self.counts


class _Pipeline:
    """Read -> score -> write for one process. The reader thread decodes and checks batches (the one row
    check builds their matrices); ``threads`` model threads each score whole batches with one native
    thread (no OpenMP barrier waits on a core the reader or writer is using: every core stays busy); the
    writer thread puts the batches back in input order, encodes and writes them. Queues are small and
    bounded: memory is a few batches whatever the input size. The first error anywhere stops it all."""

    def __init__(
        self, predictor: Predictor, staging: Path, inputs: BatchInputs, batch_rows: int,
        progress: Callable[[int], None], threads: int,
    ) -> None:  # fmt: skip
        self.predictor, self.staging, self.inputs, self.batch_rows = predictor, staging, inputs, batch_rows
        self.progress, self.threads = progress, max(1, threads)
        self.inq: queue.Queue[Any] = queue.Queue(self.threads + _QUEUE)
        self.outq: queue.Queue[Any] = queue.Queue(self.threads + _QUEUE)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.results: list[Counts] = []

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
                    self.inq.put((seq, frag, prepare_batch(batch, self.predictor, self.inputs)))
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
                        out = self.predictor.score(prep.x)
                    except BaseException as exc:
                        self.fail(exc)
                self.outq.put((seq, frag, prep, out))
        finally:
            self.outq.put(None)

    def write(self) -> None:
        parts: dict[int, _PartWriter] = {}
        pending: dict[int, tuple[Fragment, Any, Any]] = {}
        following, running = 0, self.threads
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
                        w.write(assemble(prep, out, self.predictor, w.counts), prep.bad)
        except BaseException as exc:
            self.fail(exc)
            while running:  # keep draining so no model thread blocks on a dead writer
                running -= self.outq.get() is None
        finally:
            for w in parts.values():
                w.close()

    def run(self, frags: Sequence[Fragment]) -> list[Counts]:
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
    frags: Sequence[Fragment], predictor: Predictor, staging: Path, inputs: BatchInputs, batch_rows: int,
    progress: Callable[[int], None] | None = None, threads: int = 1,
) -> list[Counts]:  # fmt: skip
    """Score ``frags`` into ``staging`` in this process (see :class:`_Pipeline`); one Counts per fragment."""
    if threads > 1:
        predictor.set_threads(1)
    pipeline = _Pipeline(predictor, staging, inputs, batch_rows, progress or (lambda n: None), threads)
    return pipeline.run(frags)


# -- worker processes (workers > 1) ------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(
    package_path: str, version: str | None, runtime: str, threads: int, inputs: BatchInputs,
    windowed: SavedWindowed | None,
) -> None:  # fmt: skip
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before native libs load
        os.environ[var] = "1"  # the worker's model threads run one native thread each
    from fourfold.model.package import load_package

    pkg = load_package(package_path).with_version(version)
    _WORKER["predictor"] = Predictor(pkg, runtime=runtime)  # type: ignore[arg-type]
    _WORKER["inputs"] = inputs if windowed is None else replace(inputs, windowed=windowed.load())
    _WORKER["threads"] = threads


def _work(frag: Fragment, staging: str, batch_rows: int) -> Counts:
    [result] = score_fragments(
        [frag], _WORKER["predictor"], Path(staging), _WORKER["inputs"], batch_rows, threads=_WORKER["threads"]
    )
    return result


# -- the engine -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalEngine:
    """Scores on this machine: one process (``workers=1``: the model on every core, for models that
    release the GIL - XGBoost, LightGBM, ONNX Runtime, scikit-learn's trees) or ``workers`` spawned
    processes of ``threads`` model threads each (default: the cores shared out)."""

    workers: int = 1
    threads: int | None = None
    progress: bool = False
    name: str = "local"

    def model_threads(self, processes: int) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // processes)

    def run(self, plan: Plan) -> list[Counts]:
        """Score the fragments still ``plan.todo`` into ``plan.staging``; one Counts per fragment."""
        bar = _Progress(sum(f.rows or 0 for f in plan.todo), self.progress)
        try:
            if self.workers <= 1 or len(plan.todo) <= 1:
                return score_fragments(plan.todo, plan.predictor, plan.staging, plan.inputs, plan.batch_rows,
                                       bar.advance, threads=self.model_threads(1))  # fmt: skip
            return self._spawn(plan, bar)
        finally:
            bar.close()

    def _spawn(self, plan: Plan, bar: _Progress) -> list[Counts]:
        inputs, saved = plan.inputs, None
        if inputs.windowed is not None:  # indexed once by the job: the workers map the saved index
            saved = inputs.windowed.save(plan.staging / "_pit")
            inputs = replace(inputs, windowed=None)
        pkg = plan.predictor.package
        args = (str(pkg.path), pkg.version, plan.predictor.runtime, self.model_threads(self.workers), inputs,
                saved)  # fmt: skip
        # spawn, not fork: the parent holds thread pools (OpenMP, Arrow) a forked child could deadlock on
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_worker, initargs=args
        ) as pool:
            futures = [pool.submit(_work, f, str(plan.staging), plan.batch_rows) for f in plan.todo]
            results = []
            for fut in futures:
                results.append(fut.result())
                bar.advance(results[-1].rows_in)
            return results


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
