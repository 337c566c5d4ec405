"""A SQL query as a batch input: run once, streamed into parquet fragments (the job's spool).

    >>> # files = spool_query("postgresql://app@db:5432/shop", "SELECT * FROM users", staging / "_input",
    >>> #                     rows_per_file=1_048_576)
    >>> # files = spool_query("duckdb:///data/warehouse.duckdb", "SELECT * FROM users", ...)

* **One snapshot, bounded memory**: the result is read as a stream of Arrow record batches (PostgreSQL
  through ADBC's binary COPY, DuckDB through its Arrow reader) and written to ``frag-00000.parquet``,
  ``frag-00001.parquet``, ... of ``rows_per_file`` rows each (each under a ``.tmp`` name, then renamed);
  no more than a batch is ever held in memory.
* **Resumable**: the spool is finished by a ``_COMPLETE`` marker (JSON, the file list) written last; a
  resumed job finds it and scores exactly the rows the first run saw - the query is not run again. A
  spool without the marker (a run killed while reading) is discarded and the query re-run.
* **Types**: what the database returns, as Arrow types; PostgreSQL ``numeric(p, s)`` becomes
  ``decimal128(p, s)`` (``decimal256`` above 38 digits), an unconstrained ``numeric`` ``decimal128(38,
  18)`` (rounded to 18 places); ``NaN`` / ``Infinity`` numerics become nulls.
* **Errors** are :class:`~fourfold.errors.FourfoldError` naming the URL (password redacted) and quoting
  the database: 400 a URL that cannot be used, 422 the query is wrong (syntax, unknown table, a value
  the query cannot compute), 503 the database cannot be reached or the connection broke.

URLs: ``postgresql://user[:password]@host[:port]/db[?sslmode=...]`` (or ``postgres://``), and
``duckdb:///abs/path.duckdb`` (opened read-only), ``duckdb://relative/path.duckdb`` or
``duckdb://:memory:`` (for queries over files: ``SELECT * FROM read_parquet('s3://...')``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fourfold.batch.staging import write_json
from fourfold.errors import FourfoldError, MissingExtraError, RequestError
from fourfold.features.stores.base import redact_url

__all__ = ["COMPLETE", "SQLError", "database_file", "spool_query"]

COMPLETE = "_COMPLETE"
_LOG = logging.getLogger(__name__)
_FREE_SCALE = 18  # the scale an unconstrained PostgreSQL numeric is read at
_TRANSIENT_SQLSTATE = ("08", "53", "57", "58")  # connection, resources, operator intervention, system
_SQLSTATE = re.compile(r"SQLSTATE: ([0-9A-Z]{5})")


class SQLError(FourfoldError):
    """A SQL input could not be read (the message names the database and quotes its error). Its status
    follows the database's error: 503 for a transient one (connection, resources), 422 for a query the
    database refuses, 400 for a URL it cannot take."""

    status = 503

    def __init__(self, message: str, *, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


def spool_query(url: str, query: str, spool: Path, *, rows_per_file: int) -> list[Path]:
    """Run ``query`` on ``url`` once and stream its result into ``spool/frag-NNNNN.parquet`` files of
    ``rows_per_file`` rows (an empty result: one empty file with the result's schema); returns them.

    If ``spool/_COMPLETE`` exists (a resumed job), returns its files without running the query."""
    if rows_per_file < 1:
        raise RequestError(f"rows_per_file must be at least 1, got {rows_per_file}")
    marker = spool / COMPLETE
    if marker.exists():
        files = [spool / name for name in json.loads(marker.read_text())["files"]]
        missing = [f.name for f in files if not f.exists()]
        if not missing:
            _LOG.info("resuming with the spooled result of the query (%d files)", len(files))
            return files
        _LOG.warning("the spool %s lacks %s: running the query again", spool, ", ".join(missing))
    _clear(spool)
    spool.mkdir(parents=True, exist_ok=True)
    where = redact_url(url)
    with _reader(url, query) as reader:
        files, rows = _write(reader, spool, rows_per_file, where)
    write_json(marker, {"url": where, "query": query, "rows": rows, "files": [f.name for f in files]})
    _LOG.info("spooled %d rows of the query on %s into %d files", rows, where, len(files))
    return files


def _clear(spool: Path) -> None:
    if not spool.exists():
        return
    for path in spool.iterdir():
        if path.name.startswith("frag-") or path.name == COMPLETE:
            path.unlink()


# -- reading -----------------------------------------------------------------------------------------------
@contextmanager
def _reader(url: str, query: str) -> Iterator[pa.RecordBatchReader]:
    if url.startswith("duckdb://"):
        with _duckdb_reader(url, query) as reader:
            yield reader
    elif url.startswith(("postgresql://", "postgres://")):
        with _postgres_reader(url, query) as reader:
            yield reader
    else:
        raise SQLError(
            f"unsupported SQL input {redact_url(url)!r}: use postgresql://... or duckdb://...", status=400
        )


@contextmanager
def _postgres_reader(url: str, query: str) -> Iterator[pa.RecordBatchReader]:
    try:
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as pg
    except ImportError:
        raise MissingExtraError("adbc_driver_postgresql", "postgres", "a postgresql:// input") from None
    where = redact_url(url)
    try:
        conn = pg.connect(_libpq_url(url))
    except adbc_driver_manager.Error as exc:
        raise db_error(exc, f"cannot connect to {where}", url) from None
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(query)
                reader = cur.fetch_record_batch()
            except adbc_driver_manager.Error as exc:
                raise db_error(exc, f"the query failed on {where}", url) from None
            yield reader
    finally:
        with contextlib.suppress(adbc_driver_manager.Error):
            conn.rollback()  # a read-only transaction: nothing to keep
        conn.close()


def _libpq_url(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]  # libpq knows both schemes; ADBC only the long one


def database_file(url: str) -> Path | None:
    """The local database file a ``duckdb://`` URL names (None for ``:memory:`` and other URLs)."""
    if not url.startswith("duckdb://"):
        return None
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if rest in ("", ":memory:", "/:memory:"):
        return None
    return Path("/" + rest.lstrip("/") if rest.startswith("/") else rest)


@contextmanager
def _duckdb_reader(url: str, query: str) -> Iterator[pa.RecordBatchReader]:
    try:
        import duckdb
    except ImportError:
        raise MissingExtraError("duckdb", "duckdb", "a duckdb:// input") from None
    file = database_file(url)
    if file is None:
        path = ":memory:"
    else:
        path = str(file)
        if not file.is_file():
            raise SQLError(
                f"the DuckDB database {path!r} of {url!r} does not exist (write duckdb:///abs/path.duckdb, "
                "duckdb://relative/path.duckdb or duckdb://:memory:)",
                status=400,
            )
    try:
        con = duckdb.connect(path, read_only=path != ":memory:")
    except duckdb.Error as exc:
        raise SQLError(f"cannot open the DuckDB database {url!r}: {exc}", status=503) from None
    try:
        try:
            relation = con.sql(query)
            if relation is None:
                raise SQLError(f"the query on {url!r} returns no rows (is it a SELECT?)", status=422)
            reader = relation.to_arrow_reader(65_536)
        except duckdb.Error as exc:
            status = 503 if isinstance(exc, duckdb.OperationalError) else 422
            raise SQLError(f"the query failed on {url!r}: {exc}", status=status) from None
        yield reader
    finally:
        con.close()


def db_error(exc: BaseException, what: str, url: str) -> SQLError:
    """A :class:`SQLError` for a database driver's exception: ``what: <the database's message>``, the
    status from its SQLSTATE (connection trouble 503, anything else about the query 422), the password
    never shown."""
    message = str(exc).strip()
    password = _password(url)
    if password:
        message = message.replace(password, "***")
    state = getattr(exc, "sqlstate", None) or _sqlstate(message)
    if state:
        status = 503 if state.startswith(_TRANSIENT_SQLSTATE) else 422
    else:
        import adbc_driver_manager

        status = 422 if isinstance(exc, adbc_driver_manager.ProgrammingError | pa.ArrowInvalid) else 503
        if "invalid URI" in message or "invalid connection option" in message:
            status = 400
    return SQLError(f"{what}: {message}", status=status)


def _sqlstate(message: str) -> str | None:
    m = _SQLSTATE.search(message)
    return m.group(1) if m else None


def _password(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


# -- writing -----------------------------------------------------------------------------------------------
def _write(
    reader: pa.RecordBatchReader, spool: Path, rows_per_file: int, where: str
) -> tuple[list[Path], int]:
    schema = _spool_schema(reader.schema)
    files: list[Path] = []
    writer: pq.ParquetWriter | None = None
    in_file = total = 0

    def open_file() -> pq.ParquetWriter:
        path = spool / f"frag-{len(files):05d}.parquet"
        files.append(path)
        try:
            return pq.ParquetWriter(_tmp(path), schema)
        except pa.ArrowNotImplementedError as exc:
            raise SQLError(
                f"the query's result on {where} cannot be spooled ({exc}); cast that column in the query "
                "(e.g. to text or a number)",
                status=422,
            ) from None

    def close_file(w: pq.ParquetWriter) -> None:
        w.close()
        os.replace(_tmp(files[-1]), files[-1])

    try:
        for batch in _batches(reader, where):
            converted = _convert(batch, schema, where)
            start = 0
            while start < converted.num_rows:
                if writer is None:
                    writer, in_file = open_file(), 0
                take = min(rows_per_file - in_file, converted.num_rows - start)
                writer.write_batch(converted.slice(start, take))
                start += take
                in_file += take
                total += take
                if in_file >= rows_per_file:
                    close_file(writer)
                    writer = None
        if writer is None and not files:  # an empty result: one empty file that carries the schema
            writer = open_file()
        if writer is not None:
            close_file(writer)
            writer = None
    finally:
        if writer is not None:  # failed midway: leave no half-written file behind
            writer.close()
            _tmp(files[-1]).unlink(missing_ok=True)
    return files, total


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _batches(reader: pa.RecordBatchReader, where: str) -> Iterator[pa.RecordBatch]:
    it = iter(reader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:  # the stream broke, or the query failed on a later row
            state = _sqlstate(str(exc))
            status = 422 if state and not state.startswith(_TRANSIENT_SQLSTATE) else 503
            raise SQLError(f"reading the query's result from {where} failed: {exc}", status=status) from None
        yield batch


def _spool_schema(schema: pa.Schema) -> pa.Schema:
    """The schema the spool is written with: PostgreSQL numerics (Arrow opaque strings) as decimals."""
    fields = []
    for f in schema:
        target = _numeric_type(f)
        fields.append(f if target is None else pa.field(f.name, target, f.nullable))
    return pa.schema(fields, metadata=schema.metadata)


def _numeric_type(f: pa.Field) -> pa.DataType | None:
    t = f.type
    if not (isinstance(t, pa.OpaqueType) and t.type_name == "numeric" and pa.types.is_string(t.storage_type)):
        return None
    typmod = int((f.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
    if typmod >= 4:
        precision = ((typmod - 4) >> 16) & 0xFFFF
        scale = (((typmod - 4) & 0x7FF) ^ 1024) - 1024  # 11-bit signed (negative scales: PostgreSQL 15+)
        if 1 <= precision <= 76 and 0 <= scale <= precision:
            return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    return pa.decimal128(38, _FREE_SCALE)


def _convert(batch: pa.RecordBatch, schema: pa.Schema, where: str) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    columns = []
    for i, f in enumerate(schema):
        col = batch.column(i)
        if col.type != f.type and isinstance(col.type, pa.OpaqueType):
            col = _to_decimal(col.storage, f, where)
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _to_decimal(text: pa.Array, f: pa.Field, where: str) -> pa.Array:
    finite = pc.if_else(
        pc.is_in(pc.utf8_lower(text), pa.array(["nan", "inf", "-inf", "infinity"])), None, text
    )
    target: Any = f.type
    try:
        if target.precision == 38 and target.scale == _FREE_SCALE:  # unconstrained: exact, then rounded
            wide = finite.cast(pa.decimal256(76, 38))
            return pc.round(wide, ndigits=_FREE_SCALE).cast(target)
        return finite.cast(target)
    except pa.ArrowInvalid as exc:
        raise SQLError(
            f"column {f.name!r} of the query on {where}: a numeric value does not fit {target} ({exc}); "
            f"cast it in the query, e.g. {f.name}::numeric(38, 6) or {f.name}::float8",
            status=422,
        ) from None
