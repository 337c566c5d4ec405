"""The Spark engine's Python worker side: the model package shipped by ``addFile``, loaded once per
Python worker (a small cache keyed by package and runtime), and ``mapInArrow``'s function that scores a
partition's record batches. Executors import only this module and what scoring needs.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fourfold.batch.rows import check_rows
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
    outputs: tuple[tuple[str, str, int], ...]  # (name, dtype, ndim) of each output


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


def _output_array(values: np.ndarray, dtype: str, ndim: int) -> pa.Array:
    np_dtype = np.dtype(dtype)
    if ndim == 0:
        return pa.array(np.asarray(values, dtype=np_dtype))
    rows, width = values.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * np.int32(width))
    flat = pa.array(np.ascontiguousarray(values, dtype=np_dtype).reshape(-1))
    return pa.ListArray.from_arrays(offsets, flat, type=pa.list_(pa.field("element", flat.type)))


def _score_partition(ref: _Model, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: the rows Spark SQL validated -> ids + outputs + model_version."""
    predictor = _worker_predictor(ref)
    version = pa.scalar(ref.version or "", pa.string())
    for batch in batches:
        if batch.num_rows == 0:
            continue
        x, ok, reasons = check_rows(batch, predictor, ref.id_cols)
        if reasons is not None:  # Spark SQL let through a row the local engine would reject: a bug
            bad = int((~ok).sum())
            raise FourfoldError(
                f"{bad} row(s) passed the Spark SQL validation but not fourfold's "
                f"(first reason: {next(r for r in reasons if r is not None)})"
            )
        out = predictor.predict_matrix(x)
        arrays = [batch.column(c) for c in ref.id_cols]
        fields = [batch.schema.field(c) for c in ref.id_cols]
        for name, dtype, ndim in ref.outputs:
            arrays.append(_output_array(out[name], dtype, ndim))
            fields.append(pa.field(name, arrays[-1].type))
        arrays.append(pa.repeat(version, batch.num_rows))
        fields.append(pa.field("model_version", pa.string()))
        yield pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
