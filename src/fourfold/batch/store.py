"""An online feature store as a batch sink: nightly scores written per entity for online reads.

    >>> # run_batch(model="models:/churn/production", input="users/", id_cols=("user_id",),
    >>> #           output="redis://cache:6379/0", partition="date=2025-04-15")
    >>> # open_store("redis://cache:6379/0").read("churn__entities", ["u42"], ["score"])

The seed's "Batch + Online" hybrid: a batch job scores every entity, and the online server reads the
score of one entity in a millisecond instead of computing it. Each scored row is written as the record of
its entity - the first id column - in the namespace ``table`` or the feature set's entity namespace
(``FeatureSet.entity_namespace``: ``<feature set name>__entities``, where the online side reads entity
features; ``<model name>__entities`` for a model without a feature set); its fields are the model's
outputs (``score``, ``label``, ...), not the ids nor ``model_version``. Writes go in chunks of 5,000
entities, streamed from the staged parts.

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds

from fourfold.batch.sinks import Quarantine
from fourfold.batch.staging import home_staging
from fourfold.batch.summary import BatchSummary
from fourfold.errors import RequestError
from fourfold.features.stores import InValue, open_store
from fourfold.features.stores.base import check_namespace, now_ms, redact_url

__all__ = ["StoreSink", "event_time_ms"]

_LOG = logging.getLogger(__name__)
_CHUNK = 5_000
_SKIP = ("model_version",)


def event_time_ms(partition: Mapping[str, str]) -> int | None:
    """Midnight UTC of the partition's ``date`` (``YYYY-MM-DD``) in ms, ``None`` without one."""
    date = partition.get("date")
    if date is None:
        return None
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise RequestError(
            f"partition date={date!r} is not a date (YYYY-MM-DD): the store sink uses it as the event time",
        ) from None
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)


@dataclass
class StoreSink:
    """Writes the staged parts into an online store (see the module's doc)."""

    url: str
    table: str | None  # as given: the staging directory is named after it
    namespace: str
    id_cols: tuple[str, ...]
    partition: dict[str, str]
    quarantine_to: Quarantine = field(repr=False)

    @classmethod
    def open(
        cls, url: str, *, table: str | None, partition: Mapping[str, str], id_cols: Sequence[str],
        quarantine: str | None, model_name: str, namespace: str,
    ) -> StoreSink:  # fmt: skip
        """The sink, its arguments checked and the store reached - before anything is scored."""
        if not id_cols:
            raise RequestError(
                f"a feature store output ({redact_url(url)}) needs --id-cols: the first id column "
                "is the entity key the scores are stored under",
            )
        namespace = table or namespace
        check_namespace(namespace)
        event_time_ms(partition)  # a bad date fails now, not after scoring
        with closing(open_store(url)) as store:
            store.read(namespace, ["__fourfold_probe"], ["score"])  # unreachable: 503 before scoring
        staging = home_staging(url, table, _spec(partition))
        q = Quarantine.for_job(quarantine, staging, partition, model_name)
        return cls(url, table, namespace, tuple(id_cols), dict(partition), q)

    @property
    def key(self) -> str:
        return self.id_cols[0]

    @property
    def staging(self) -> Path:
        return home_staging(self.url, self.table, _spec(self.partition))

    @property
    def quarantine(self) -> Path:
        return self.quarantine_to.dest

    @property
    def destination(self) -> str:
        return f"{redact_url(self.url)} namespace={self.namespace}"

    def guard(self, protected: Sequence[Path], *, overwrite: bool) -> None:
        self.quarantine_to.guard(protected, overwrite=overwrite)

    def commit(self, summary: BatchSummary) -> None:
        staging = self.staging
        parts = sorted(staging.glob("part-*.parquet"))
        at = event_time_ms(self.partition)
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
        self.quarantine_to.publish(staging)
        shutil.rmtree(staging, ignore_errors=True)

    def _chunks(self, parts: list[Path]) -> Iterator[dict[str, dict[str, InValue]]]:
        """``{entity: {field: value}}`` for at most ``_CHUNK`` entities at a time, streamed."""
        if not parts:
            return
        dataset = ds.dataset([str(p) for p in parts], format="parquet")
        ids = set(self.id_cols)
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


def _spec(partition: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in partition.items())
