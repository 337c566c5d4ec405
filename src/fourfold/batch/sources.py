"""Batch sources: parquet or CSV files, directories and globs (local or any fsspec / pyarrow filesystem
URL), or a SQL query on PostgreSQL or DuckDB - read fragment by fragment (one file is one fragment: the
unit of parallelism and of resume), record batch by record batch.

    >>> # src = open_source("warehouse/users/date=2025-04-15/")
    >>> # src = open_source("postgresql://127.0.0.1/test", query="SELECT * FROM users", spool=staging)
    >>> # for frag in src.fragments: frag.batches(65_536)

A query's result is streamed once into parquet fragments in the job's staging directory (``sql.py``):
one consistent snapshot, bounded memory, and a resumed job scores exactly the rows the killed one saw.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fourfold.batch.options import SQL_SCHEMES
from fourfold.errors import FourfoldError, InputError, NotFoundError, RequestError

__all__ = ["Fragment", "Source", "open_source"]

_BUFFER = 1 << 20  # bytes read ahead per column stream


@dataclass(frozen=True)
class Fragment:
    index: int
    path: str
    format: str
    rows: int | None = None  # from the parquet footer; None for CSV
    filesystem: Any = None  # a pyarrow FileSystem for remote files, None for local ones
    size: int | None = None  # bytes, and the modification time: what a resumed job must find unchanged
    mtime_ns: int | None = None

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The fragment's rows, ``batch_rows`` at a time; memory is bounded by one row group (parquet)
        or one block (CSV), never by the file's size. A file that cannot be decoded (a corrupt page, a
        malformed CSV line) is an :class:`InputError` naming it."""
        try:
            yield from self._batches(batch_rows)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read batch input file {self.path}: {_one_line(exc)}") from None

    def _batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        if self.format == "parquet":
            # streamed page by page (no pre-buffering of whole column chunks): memory stays a few pages
            # per column whatever the row group size
            with pq.ParquetFile(
                self.path, filesystem=self.filesystem, pre_buffer=False, buffer_size=_BUFFER
            ) as f:
                yield from f.iter_batches(batch_size=batch_rows)
            return
        with (self.filesystem or pafs.LocalFileSystem()).open_input_stream(self.path) as stream:
            reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=1 << 24))
            for batch in reader:
                for start in range(0, batch.num_rows, batch_rows):
                    yield batch.slice(start, batch_rows)

    def fingerprint(self) -> dict[str, Any]:
        """The file as a resumed job must find it again: path, size and modification time."""
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}


def _one_line(exc: BaseException) -> str:
    """A reader's error as one printable line (pyarrow's may span lines and quote raw bytes)."""
    lines = ["".join(c if c.isprintable() else "?" for c in ln).strip() for ln in str(exc).splitlines()]
    return "; ".join(ln for ln in lines if ln) or type(exc).__name__


@dataclass(frozen=True)
class Source:
    spec: str
    fragments: tuple[Fragment, ...]
    schema: pa.Schema

    def local_paths(self) -> list[Path]:
        """The local files and directory this source reads (what an output must never replace)."""
        if self.spec.startswith(SQL_SCHEMES) or ("://" in self.spec and not self.spec.startswith("file://")):
            return []
        paths = [Path(f.path) for f in self.fragments]
        root = Path(self.spec.removeprefix("file://"))
        return [root, *paths] if root.is_dir() else paths


def open_source(
    spec: str, *, query: str | None = None, spool: Path | None = None, rows: int = 1 << 20
) -> Source:
    """Files matching ``spec`` (a file, a directory, or a glob) in a stable (sorted) order; or, for a
    ``postgresql://`` / ``duckdb://`` URL, ``query``'s result spooled into ``spool`` (``rows`` a file)."""
    if spec.startswith(SQL_SCHEMES):
        if not query:
            raise RequestError(f"a SQL input ({spec.split('://')[0]}) needs --query")
        if spool is None:
            raise FourfoldError("a SQL input needs a spool directory")
        from fourfold.batch.sql import spool_query

        spooled = spool_query(spec, query, spool, rows_per_file=rows)
        return _files_source(spec, [str(f) for f in spooled], None)
    if query:
        raise RequestError("--query is only for postgresql:// and duckdb:// inputs")
    if "://" in spec and not spec.startswith("file://"):
        try:
            fs, root = pafs.FileSystem.from_uri(spec)
        except (pa.ArrowInvalid, ValueError) as exc:  # not a scheme pyarrow knows: try fsspec
            try:
                from fsspec.core import url_to_fs

                fsspec_fs, root = url_to_fs(spec)
                fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs))
            except (ImportError, ValueError) as exc2:
                raise RequestError(f"cannot open batch input {spec!r}: {exc}; {exc2}") from None
        return _files_source(spec, _remote_files(fs, root, spec), fs)
    path = Path(spec.removeprefix("file://"))
    if any(ch in spec for ch in "*?["):
        files = sorted(glob.glob(str(path), recursive=True))
    elif path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
    elif path.is_file():
        files = [str(path)]
    else:
        raise NotFoundError(f"batch input {spec!r} does not exist")
    return _files_source(spec, files, None)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.parts)


def _remote_files(fs: pafs.FileSystem, root: str, spec: str) -> list[str]:
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        return [root]
    if info.type == pafs.FileType.NotFound:
        raise NotFoundError(f"batch input {spec!r} does not exist")
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(
        f.path for f in found
        if f.type == pafs.FileType.File and not _hidden(Path(f.path.removeprefix(root.rstrip("/"))))
    )  # fmt: skip


def _files_source(spec: str, files: list[str], fs: Any) -> Source:
    if not files:
        raise NotFoundError(f"batch input {spec!r} matches no files")
    fmt = "csv" if all(f.endswith(".csv") for f in files) else "parquet"
    try:
        schema = ds.dataset(files, format=fmt, filesystem=fs).schema
        counts: list[int | None] = [None] * len(files)
        if fmt == "parquet":
            counts = [pq.ParquetFile(f, filesystem=fs).metadata.num_rows for f in files]
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read batch input {spec!r} as {fmt}: {exc}") from None
    stats = [_stat(f, fs) for f in files]
    frags = tuple(
        Fragment(i, f, fmt, n, fs, size, mtime)
        for i, (f, n, (size, mtime)) in enumerate(zip(files, counts, stats, strict=True))
    )
    return Source(spec, frags, schema)


def _stat(path: str, fs: Any) -> tuple[int | None, int | None]:
    """Size and modification time (ns) of a file; for a remote file what its filesystem reports."""
    if fs is None:
        st = Path(path).stat()
        return st.st_size, st.st_mtime_ns
    info = fs.get_file_info(path)
    return info.size, info.mtime_ns
