"""Windowed features for a batch job, computed point-in-time from the event log (``--events``).

    >>> # fourfold batch models:/fraud/production --input users.parquet --output scores/ \\
    >>> #     --events transactions/ [--timestamp scored_at | --as-of 2025-04-15T00:00:00Z]

Each row's windowed features are the ones the offline engine gives for its entity as of the row's
timestamp column (default: the event source's timestamp column name) or one ``--as-of`` time for every
row - the same answer the training set and the online server had (``fourfold.features.offline
.PointInTime``). The log is read and indexed **once**, in the job's process (it must fit in memory; the
rows stream as usual); worker processes load the saved index (:meth:`Windowed.save`: memory-mapped
``.npy`` files) instead of reading the log again. Rows whose key or as-of time is missing get NaN here
and are quarantined by the row check, which names the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from fourfold.batch.sources import Source
from fourfold.errors import FourfoldError, InputError
from fourfold.features.definitions import FeatureSet
from fourfold.features.events import _millis
from fourfold.features.offline import PointInTime

__all__ = ["SavedWindowed", "Windowed", "read_log"]


def read_log(events: Source) -> pa.Table:
    """The whole event log (files, a directory or a glob, opened as for ``--input``), in arrival order."""
    batches = [b for frag in events.fragments for b in frag.batches(1 << 20)]
    return pa.Table.from_batches(batches, schema=events.schema)


@dataclass(frozen=True)
class Windowed:
    """The indexed log and where each row's entity key and as-of time come from."""

    pit: PointInTime
    key: str
    timestamp: str | None  # the rows' as-of column, or None with ``as_of_ms``
    as_of_ms: int | None
    names: tuple[str, ...]  # the windowed features the model takes

    @classmethod
    def build(
        cls, events: Source, fs: FeatureSet, names: tuple[str, ...], key: str, timestamp: str | None,
        as_of_ms: int | None,
    ) -> Windowed:  # fmt: skip
        """Read and index the event log once."""
        log = read_log(events)
        try:
            pit = PointInTime(log, fs)
        except FourfoldError as exc:
            raise InputError(f"event log {events.spec!r}: {exc.message}") from None
        return cls(pit, key, timestamp, as_of_ms, names)

    def values(self, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        """The windowed features of ``batch``'s rows (NaN where the key or the as-of time is missing)."""
        keys = batch.column(self.key)
        missing = np.asarray(keys.is_null().to_numpy(zero_copy_only=False))
        if self.timestamp is None:
            ts = np.full(batch.num_rows, self.as_of_ms, dtype=np.int64)
        else:
            col = batch.column(self.timestamp)
            ts = _millis(col, self.timestamp)
            missing = missing | np.asarray(col.is_null().to_numpy(zero_copy_only=False))
        values = self.pit.at(keys, ts)
        if not missing.any():
            return {name: values[name] for name in self.names}
        return {name: np.where(missing, np.nan, values[name]) for name in self.names}

    def save(self, directory: Path) -> SavedWindowed:
        """Save the index for other processes (see :class:`SavedWindowed`)."""
        self.pit.save(directory)
        return SavedWindowed(directory, self.pit.fs, self.key, self.timestamp, self.as_of_ms, self.names)


@dataclass(frozen=True)
class SavedWindowed:
    """A :class:`Windowed` whose index is saved in ``directory``: small and picklable, for worker
    processes; :meth:`load` memory-maps the index (the log is not read again)."""

    directory: Path
    fs: FeatureSet
    key: str
    timestamp: str | None
    as_of_ms: int | None
    names: tuple[str, ...]

    def load(self) -> Windowed:
        pit = PointInTime.load(self.directory, self.fs)
        return Windowed(pit, self.key, self.timestamp, self.as_of_ms, self.names)
