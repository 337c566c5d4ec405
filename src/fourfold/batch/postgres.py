"""A PostgreSQL table as a batch sink: the partition replaced in one transaction.

    >>> # run_batch(model="models:/churn/production", input="users/", id_cols=("user_id",),
    >>> #           output="postgresql://etl@db:5432/analytics", table="ml.churn_scores",
    >>> #           partition="date=2025-04-15")

The engines stage parquet parts as for any sink (under ``$FOURFOLD_HOME/batch/``); :meth:`commit` then,
in **one** transaction (ADBC, autocommit off):

1. takes a transaction-scoped advisory lock on the table (two jobs writing the same table commit one
   after the other, so a partition is never loaded twice);
2. creates the table if it does not exist, typed from the parts' Arrow schema (ids, ``score``,
   ``label``..., ``model_version``, then the partition keys as ``text`` columns);
3. deletes the rows of this partition (``WHERE "date" = $1 AND ...``), or every row without a partition;
4. bulk-loads the parts with binary ``COPY``, streamed batch by batch (bounded memory);
5. commits.

Readers see the old partition or the new one, never half of either; a re-run replaces the partition
(idempotent), other partitions are untouched. If any step fails the transaction is rolled back - the
table is as it was - and the staged parts are kept, so ``--resume`` retries the commit without scoring
again. After the commit the quarantined rows are published (:class:`~fourfold.batch.sinks.Quarantine`)
and the staging directory is removed.

The table name is a plain or schema-qualified identifier (``scores``, ``ml.churn_scores``); it is quoted,
so it is case-sensitive (write it in lower case to match unquoted SQL).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as ds

from fourfold.batch.sinks import Quarantine
from fourfold.batch.staging import home_staging
from fourfold.batch.summary import BatchSummary
from fourfold.errors import FourfoldError, MissingExtraError, RequestError, UnavailableError

__all__ = ["PostgresSink", "quote_table"]

_LOG = logging.getLogger(__name__)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
_READ_ROWS = 65_536


def quote_table(table: str) -> tuple[str | None, str, str]:
    """``"ml.scores"`` -> ``("ml", "scores", '"ml"."scores"')``: the schema (or ``None``), the name, and
    the quoted SQL; a :class:`FourfoldError` (400) for anything but a plain or schema-qualified name."""
    parts = table.split(".")
    if len(parts) > 2 or not all(_IDENT.fullmatch(p) for p in parts):
        raise RequestError(
            f"--table {table!r} is not a table name: use name or schema.name (letters, digits, '_', '$')",
        )
    schema, name = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return schema, name, ".".join(f'"{p}"' for p in parts)


@dataclass
class PostgresSink:
    """Commits the staged parts into ``table`` on ``url`` (see the module's doc)."""

    url: str
    table: str
    partition: dict[str, str]
    quarantine_to: Quarantine = field(repr=False)

    @classmethod
    def open(
        cls, url: str, *, table: str | None, partition: Mapping[str, str], id_cols: Sequence[str],
        quarantine: str | None, owner: str,
    ) -> PostgresSink:  # fmt: skip
        """The sink, its arguments checked and the database reached - before anything is scored."""
        if not table:
            raise RequestError(
                f"a postgresql:// output needs --table (the table to write), e.g. --table scores "
                f"for {_redacted(url)}",
            )
        quote_table(table)
        for key in partition:
            if not _IDENT.fullmatch(key):
                raise RequestError(f"partition key {key!r} is not a column name")
            if key in id_cols or key in ("score", "label", "model_version"):
                raise RequestError(f"partition key {key!r} clashes with an output column")
        staging = home_staging(url, table, _spec(partition))
        sink = cls(url, table, dict(partition), Quarantine.for_job(quarantine, staging, partition, owner))
        sink._connect().close()  # unreachable or refused: 503 now, not after scoring
        return sink

    @property
    def staging(self) -> Path:
        return home_staging(self.url, self.table, _spec(self.partition))

    @property
    def quarantine(self) -> Path:
        return self.quarantine_to.dest

    @property
    def destination(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        where = f"postgresql://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
        return " ".join([where, f"table={self.table}", *([_spec(self.partition)] if self.partition else [])])

    def guard(self, protected: Sequence[Path], *, overwrite: bool) -> None:
        self.quarantine_to.guard(protected, overwrite=overwrite)

    def commit(self, summary: BatchSummary) -> None:
        staging = self.staging
        parts = sorted(staging.glob("part-*.parquet"))
        rows = self._load(parts)
        _LOG.info("committed %d rows to %s", rows, self.destination)
        self.quarantine_to.publish(staging)
        shutil.rmtree(staging, ignore_errors=True)

    # -- the transaction -------------------------------------------------------------------------------------
    def _load(self, parts: list[Path]) -> int:
        import adbc_driver_manager

        schema_name, name, quoted = quote_table(self.table)
        keys = self.partition
        where = " AND ".join(f'"{k}" = ${i}' for i, k in enumerate(keys, 1))
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext($1))", (f"fourfold:{quoted}",))
                exists = self._exists(cur, quoted)
                loaded = 0
                if parts:
                    data = self._reader(parts, keys)
                    cur.adbc_ingest(
                        name, _empty(data.schema), mode="create_append", db_schema_name=schema_name
                    )
                    self._delete(cur, quoted, where, keys)
                    loaded = int(cur.adbc_ingest(name, data, mode="append", db_schema_name=schema_name))
                elif exists:  # nothing scored (every row rejected, or an empty input): an empty partition
                    self._delete(cur, quoted, where, keys)
            conn.commit()
            return loaded
        except BaseException as exc:
            with contextlib.suppress(adbc_driver_manager.Error):
                conn.rollback()
            if isinstance(exc, adbc_driver_manager.Error | pa.ArrowException | OSError):
                raise self._error(exc, "rolled back, the table is unchanged") from None
            raise
        finally:
            conn.close()

    def _connect(self) -> Any:
        try:
            import adbc_driver_manager
            import adbc_driver_postgresql.dbapi as pg
        except ImportError:
            raise MissingExtraError("adbc_driver_postgresql", "postgres", "a postgresql:// output") from None
        try:
            return pg.connect("postgresql://" + self.url.split("://", 1)[1])
        except adbc_driver_manager.Error as exc:
            raise self._error(exc, "cannot connect") from None

    @staticmethod
    def _exists(cur: Any, quoted: str) -> bool:
        cur.execute("SELECT to_regclass($1) IS NOT NULL", (quoted,))
        row = cur.fetchone()
        return bool(row and row[0])

    def _delete(self, cur: Any, quoted: str, where: str, keys: dict[str, str]) -> None:
        sql = f"WITH gone AS (DELETE FROM {quoted}{f' WHERE {where}' if where else ''} RETURNING 1) "
        cur.execute(sql + "SELECT count(*) FROM gone", tuple(keys.values()) or None)
        row = cur.fetchone()
        _LOG.info("replacing %s rows of %s", row[0] if row else "?", self.destination)

    @staticmethod
    def _reader(parts: list[Path], keys: dict[str, str]) -> pa.RecordBatchReader:
        """The staged parts, batch by batch, with the partition keys as constant text columns."""
        dataset = ds.dataset([str(p) for p in parts], format="parquet")
        schema = dataset.schema
        for key in keys:
            if key in schema.names:
                raise RequestError(f"partition key {key!r} clashes with an output column")
            schema = schema.append(pa.field(key, pa.string(), nullable=False))

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in dataset.to_batches(batch_size=_READ_ROWS):
                arrays = [
                    *batch.columns,
                    *(pa.repeat(pa.scalar(v, pa.string()), batch.num_rows) for v in keys.values()),
                ]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def _error(self, exc: BaseException, what: str) -> FourfoldError:
        from fourfold.batch.sql import db_error

        err = db_error(
            exc, f"writing table {self.table!r} on {_redacted(self.url)} failed ({what})", self.url
        )
        return UnavailableError(err.message)


def _spec(partition: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in partition.items())


def _empty(schema: pa.Schema) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(schema, iter(()))


def _redacted(url: str) -> str:
    from fourfold.features.stores.base import redact_url

    return redact_url(url)
