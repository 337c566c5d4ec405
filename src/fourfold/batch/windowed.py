"""Windowed features for a batch job: computed point-in-time from the event log, per record batch.

    >>> # fourfold batch models:/fraud/production --input users.parquet --output scores/ \\
    >>> #     --events transactions/ [--timestamp scored_at | --as-of 2025-04-15T00:00:00Z]

When the model's feature set has windowed features and the job names an event log, each row's windowed
features are the ones the offline engine gives for its entity as of the row's timestamp column (default:
the source's timestamp column name) or one ``as_of`` time for every row: the same answer the training set
and the online server had (``fourfold.features.offline.PointInTime``). The log is read and indexed once
(it must fit in memory; the rows to score stream as usual). Rows whose key or as-of time is missing are
quarantined with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from fourfold.batch.sources import open_source
from fourfold.errors import FourfoldError, InputError, RequestError
from fourfold.features.definitions import FeatureSet
from fourfold.features.events import _millis, single_source
from fourfold.features.offline import PointInTime

if TYPE_CHECKING:
    from fourfold.batch.job import BatchJob

__all__ = ["WindowedTransform", "parse_as_of"]


def parse_as_of(text: str) -> int:
    """ISO 8601 (``2025-04-15``, ``2025-04-15T02:00:00Z``; naive means UTC) or epoch ms -> epoch ms."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(
            f"--as-of wants ISO 8601 or epoch milliseconds, got {text!r}",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class WindowedTransform:
    pit: PointInTime
    key: str
    timestamp: str | None  # the rows' as-of column, or None with ``as_of_ms``
    as_of_ms: int | None
    names: tuple[str, ...]

    @property
    def required(self) -> tuple[str, ...]:
        """Columns a row must have (non-null) to be scored."""
        return (self.key,) if self.timestamp is None else (self.key, self.timestamp)

    @classmethod
    def for_job(cls, job: BatchJob, fs: FeatureSet) -> WindowedTransform:
        assert job.events is not None
        key, ts = single_source(fs)
        src = open_source(job.events)
        log = pa.Table.from_batches(
            [b for frag in src.fragments for b in frag.batches(1 << 20)], schema=src.schema
        )
        try:
            pit = PointInTime(log, fs)
        except FourfoldError as exc:
            raise InputError(f"event log {job.events!r}: {exc.message}") from None
        as_of = parse_as_of(job.as_of) if job.as_of else None
        return cls(pit, key, None if as_of is not None else (job.timestamp or ts), as_of,
                   tuple(f.name for f in fs.windowed))  # fmt: skip

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        keys = batch.column(self.key)
        missing = np.asarray(keys.is_null().to_numpy(zero_copy_only=False))
        if self.timestamp is None:
            ts = np.full(batch.num_rows, self.as_of_ms, dtype=np.int64)
        else:
            col = batch.column(self.timestamp)
            ts = _millis(col, self.timestamp)
            missing = missing | np.asarray(col.is_null().to_numpy(zero_copy_only=False))
        values = self.pit.at(keys, ts)
        names = list(batch.schema.names)
        arrays = list(batch.columns)
        for name in self.names:
            col = np.where(missing, np.nan, values[name])
            if name in names:
                arrays[names.index(name)] = pa.array(col)
            else:
                names.append(name)
                arrays.append(pa.array(col))
        return pa.RecordBatch.from_arrays(arrays, names=names)
