"""One record batch of a batch job, engine-agnostic: the row checks (each bad row with its first
reason), the model matrix, and the output rows; ``Counts`` adds them up (rows, rejects, score histogram).

    >>> # prep = prepare_batch(batch, predictor, id_cols=("user_id",))   # checks + matrix, no model
    >>> # table = assemble(prep, predictor.predict_matrix(prep.x), version, counts)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from fourfold.model.inputs import as_columns
from fourfold.model.predictor import Predictor

__all__ = ["BINS", "Counts", "Prepared", "assemble", "check_rows", "prepare_batch"]

BINS = 20  # the score histogram behind the summary's quantiles: np.histogram(scores, BINS, (0, 1))


@dataclass
class Counts:
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    hist: list[int] = field(default_factory=lambda: [0] * BINS)

    def add(self, other: Counts) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.rejected += other.rejected
        self.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]

    def add_scores(self, scores: np.ndarray) -> None:
        hist, _ = np.histogram(scores, bins=BINS, range=(0.0, 1.0))
        self.hist = [a + int(b) for a, b in zip(self.hist, hist, strict=True)]


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
