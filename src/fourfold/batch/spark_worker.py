"""The Spark engine's Python worker side: the model package shipped by ``addFile``, loaded once per
Python worker (a small cache keyed by package and runtime), and ``mapInArrow``'s function that scores a
partition's record batches - the matrix from :meth:`fourfold.Predictor.check` (the one check; Spark SQL
already applied its rules, so every row passes), the columns from the one output encoder. Executors
import only this module and what scoring needs.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from fourfold.batch.rows import output_table
from fourfold.errors import FourfoldError
from fourfold.model.package import load_package
from fourfold.model.predictor import Predictor

__all__: list[str] = []


# -- the Python worker side ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Model:
    """What a task needs to find the model: small and picklable - never the model itself."""

    name: str  # the package directory's name among the SparkFiles (fourfold-model-<sha>)
    version: str | None
    runtime: str
    id_cols: tuple[str, ...]


#: the models this Python worker process has loaded, most recent last (Spark reuses the process task after
#: task, job after job): keyed by the package's content sha, version and runtime
_MODELS: OrderedDict[tuple[str, str | None, str], Predictor] = OrderedDict()
_KEEP = 2  # models kept per worker: a long-lived session that scores many models does not grow forever


def _worker_predictor(ref: _Model) -> Predictor:
    key = (ref.name, ref.version, ref.runtime)
    predictor = _MODELS.get(key)
    if predictor is None:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before the model loads
            os.environ[var] = "1"
        from pyspark import SparkFiles

        pkg = load_package(SparkFiles.get(ref.name)).with_version(ref.version)
        predictor = _MODELS[key] = Predictor(pkg, runtime=ref.runtime, threads=1)  # type: ignore[arg-type]
        while len(_MODELS) > _KEEP:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(key)
    return predictor


def _score_partition(ref: _Model, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: the rows Spark SQL validated -> ids + outputs + model_version."""
    predictor = _worker_predictor(ref)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        checked = predictor.check(batch)
        if checked.rejected:  # Spark SQL let through a row the row check refuses: the two must agree
            err = checked.error()
            raise FourfoldError(
                f"{checked.rejected} row(s) passed the Spark SQL conditions but not the row check "
                f"({err.message if err else '?'})"
            )
        table = output_table(batch.select(list(ref.id_cols)), predictor.score(checked.x), predictor)
        yield from table.to_batches()
