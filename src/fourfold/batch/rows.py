"""One record batch of a batch job, engine-agnostic: checked by the one row check, scored, and encoded by
the one output encoder; ``Counts`` adds the batches up (rows, rejects, the score histogram).

    >>> # prep = prepare_batch(batch, predictor, inputs)      # Predictor.check: good rows' matrix + reasons
    >>> # table = assemble(prep, predictor.score(prep.x), predictor, counts)   # ids + outputs + version

Nothing here re-implements a rule: the reasons are :meth:`fourfold.Predictor.check`'s, the output columns
:func:`fourfold.model.outputs.to_arrow`'s - the same in the local engine, the Spark worker and online.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from fourfold.batch.histogram import ScoreHistogram
from fourfold.model.outputs import to_arrow
from fourfold.model.predictor import Predictor

if TYPE_CHECKING:
    from fourfold.batch.inputs import BatchInputs

__all__ = ["Counts", "Prepared", "assemble", "output_table", "prepare_batch"]


@dataclass
class Counts:
    """Rows read, scored and rejected, and the histogram of the scores, of one or more batches."""

    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    hist: ScoreHistogram = field(default_factory=ScoreHistogram)

    def add(self, other: Counts) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.rejected += other.rejected
        self.hist.merge(other.hist)

    def to_json(self) -> dict[str, Any]:
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "rejected": self.rejected,
                "hist": self.hist.to_json()}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counts:
        return cls(int(data["rows_in"]), int(data["rows_out"]), int(data["rejected"]),
                   ScoreHistogram.from_json(data["hist"]))  # fmt: skip


@dataclass
class Prepared:
    """A record batch checked and ready for the model: the good rows' ids and matrix, the bad rows."""

    rows_in: int
    ids: pa.Table  # the good rows' id columns
    x: np.ndarray | None  # the good rows' model matrix (None: no good rows)
    bad: pa.Table | None  # the bad rows: every input column + ``_reason``


def prepare_batch(batch: pa.RecordBatch, predictor: Predictor, inputs: BatchInputs) -> Prepared:
    """Check ``batch`` (its model columns as ``inputs`` assembles them) with :meth:`Predictor.check`."""
    checked = predictor.check(inputs.view(batch), required=inputs.required)
    ids = pa.Table.from_batches([batch.select(list(inputs.id_cols))])
    reasons = checked.reasons()
    if reasons is None:
        return Prepared(batch.num_rows, ids, checked.x, None)
    ok = checked.ok
    bad = pa.Table.from_batches([batch]).filter(pa.array(~ok))
    bad = bad.append_column("_reason", pa.array(reasons[~ok].tolist(), pa.string()))
    good = checked.x if len(checked.x) else None
    return Prepared(batch.num_rows, ids.filter(pa.array(ok)), good, bad)


def output_table(
    ids: pa.Table | pa.RecordBatch, out: dict[str, np.ndarray], predictor: Predictor
) -> pa.Table:
    """The output rows: ``ids``, the model's outputs (:func:`~fourfold.model.outputs.to_arrow`), then
    ``model_version`` - the one output schema of every engine."""
    table = ids if isinstance(ids, pa.Table) else pa.Table.from_batches([ids])
    for name, column in to_arrow(out, predictor.signature.outputs):
        table = table.append_column(name, column)
    version = pa.scalar(predictor.version or "", pa.string())
    return table.append_column("model_version", pa.repeat(version, table.num_rows))


def assemble(
    prep: Prepared, out: dict[str, np.ndarray] | None, predictor: Predictor, counts: Counts
) -> pa.Table | None:
    """The output rows of a prepared batch (None when none was scored); ``counts`` updated."""
    counts.rows_in += prep.rows_in
    counts.rejected += prep.bad.num_rows if prep.bad is not None else 0
    if out is None:
        return None
    table = output_table(prep.ids, out, predictor)
    counts.rows_out += table.num_rows
    if "score" in out:
        counts.hist.add(out["score"])
    return table
