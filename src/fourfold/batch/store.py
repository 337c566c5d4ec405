"""An online feature store as a batch sink: nightly scores written per entity for online reads.

    >>> # run_batch(model="models:/churn/production", input="users/", id_cols=("user_id",),
    >>> #           output="redis://cache:6379/0", partition="date=2025-04-15")
    >>> # open_store("redis://cache:6379/0").read("churn__entities", ["u42"], ["score"])

The seed's "Batch + Online" hybrid: a batch job scores every entity, and the online server reads the
score of one entity in a millisecond instead of computing it. Each scored row is written as the record of
its entity - the first id column - in the namespace ``table`` or ``<model name>__entities`` (the online
side's entity-feature convention); its fields are the model's outputs (``score``, ``label``, ...), not the
ids nor ``model_version``. Writes go in chunks of 5,000 entities, streamed from the staged parts.

Event time: with a ``date`` partition key, midnight UTC of that date, so re-running the same night writes
the same values again (idempotent) and a late re-run of an older night never overwrites a newer one (the
store refuses the older write; those entities are counted as stale and logged, the job does not fail);
without one, the time of the commit. A store write is per entity, not one transaction: a commit that fails
midway leaves some entities with the new values - re-running (or ``--resume``) completes it.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.dataset as ds

from fourfold.batch.sinks import home_staging, partition_values, publish_quarantine, quarantine_dir
from fourfold.errors import RequestError
from fourfold.features.stores import InValue, open_store
from fourfold.features.stores.base import check_namespace, now_ms, redact_url

if TYPE_CHECKING:
    from fourfold.batch.job import BatchJob, BatchSummary

__all__ = ["StoreSink", "event_time_ms"]

_LOG = logging.getLogger(__name__)
_CHUNK = 5_000
_SKIP = ("model_version",)


def event_time_ms(partition: str | None) -> int | None:
    """Midnight UTC of the partition's ``date`` (``YYYY-MM-DD``) in ms, ``None`` without one."""
    date = partition_values(partition).get("date")
    if date is None:
        return None
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise RequestError(
            f"partition date={date!r} is not a date (YYYY-MM-DD): the store sink uses it as the event time",
        ) from None
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)


@dataclass(frozen=True)
class StoreSink:
    """Writes the staged parts into an online store (see the module's doc)."""

    job: BatchJob
    url: str
    namespace: str
    key: str

    @classmethod
    def for_job(cls, job: BatchJob) -> StoreSink:
        if not job.id_cols:
            raise RequestError(
                f"a feature store output ({redact_url(job.output)}) needs --id-cols: the first id column "
                "is the entity key the scores are stored under",
            )
        namespace = job.table or f"{_model_name(job.model)}__entities"
        check_namespace(namespace)
        event_time_ms(job.partition)  # a bad date fails now, not after scoring
        with closing(open_store(job.output)) as store:
            store.read(namespace, ["__fourfold_probe"], ["score"])  # unreachable: 503 before scoring
        return cls(job, job.output, namespace, job.id_cols[0])

    @property
    def staging(self) -> Path:
        return home_staging(self.job)

    @property
    def quarantine(self) -> Path:
        return quarantine_dir(self.job, self.staging)

    @property
    def destination(self) -> str:
        return f"{redact_url(self.url)} namespace={self.namespace}"

    def commit(self, summary: BatchSummary) -> None:
        staging = self.staging
        parts = sorted(staging.glob("part-*.parquet"))
        at = event_time_ms(self.job.partition)
        when = now_ms() if at is None else at
        written = stale = 0
        with closing(open_store(self.url)) as store:
            for rows in self._chunks(parts):
                result = store.write(self.namespace, rows, event_time_ms=when)
                written += result.written
                stale += len(result.stale)
        if stale:
            _LOG.warning(
                "%d of %d entities in %s were not written: the store holds newer values for them",
                stale, written + stale, self.destination,
            )  # fmt: skip
        _LOG.info("wrote %d entities to %s", written, self.destination)
        publish_quarantine(self.job, staging)
        shutil.rmtree(staging, ignore_errors=True)

    def _chunks(self, parts: list[Path]) -> Iterator[dict[str, dict[str, InValue]]]:
        """``{entity: {field: value}}`` for at most ``_CHUNK`` entities at a time, streamed."""
        if not parts:
            return
        dataset = ds.dataset([str(p) for p in parts], format="parquet")
        ids = set(self.job.id_cols)
        fields = [n for n in dataset.schema.names if n not in ids and n not in _SKIP]
        for batch in dataset.to_batches(columns=[self.key, *fields], batch_size=_CHUNK):
            keys = [str(k) for k in batch.column(0).to_pylist()]
            values = [batch.column(i + 1).to_pylist() for i in range(len(fields))]
            rows: dict[str, dict[str, InValue]] = {}
            for j, key in enumerate(keys):
                rows[key] = {
                    name: col[j] for name, col in zip(fields, values, strict=True) if col[j] is not None
                }
            yield rows


def _model_name(uri: str) -> str:
    from fourfold.registry.resolve import resolve

    return resolve(uri, verify=False).name
