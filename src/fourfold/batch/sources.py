"""Batch sources: parquet or CSV files, directories and globs, read fragment by fragment (one file is one
fragment: the unit of parallelism and of resume), record batch by record batch.

    >>> # src = open_source("warehouse/users/date=2025-04-15/")
    >>> # for frag in src.fragments: frag.batches(65_536)
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from fourfold.errors import FourfoldError

__all__ = ["Fragment", "Source", "open_source"]


@dataclass(frozen=True)
class Fragment:
    index: int
    path: str
    format: str

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        dataset = ds.dataset(self.path, format=self.format)
        yield from dataset.to_batches(batch_size=batch_rows)


@dataclass(frozen=True)
class Source:
    spec: str
    fragments: tuple[Fragment, ...]
    schema: pa.Schema


def open_source(spec: str) -> Source:
    """Files matching ``spec`` (a file, a directory, or a glob), in a stable (sorted) order."""
    path = Path(spec)
    if any(ch in spec for ch in "*?["):
        files = sorted(glob.glob(spec, recursive=True))
    elif path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith(("_", ".")))
    elif path.is_file():
        files = [str(path)]
    else:
        raise FourfoldError(f"batch input {spec!r} does not exist", status=404)
    if not files:
        raise FourfoldError(f"batch input {spec!r} matches no files", status=404)
    fmt = "csv" if all(f.endswith(".csv") for f in files) else "parquet"
    try:
        schema = ds.dataset(files, format=fmt).schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise FourfoldError(f"cannot read batch input {spec!r} as {fmt}: {exc}", status=422) from None
    return Source(spec, tuple(Fragment(i, f, fmt) for i, f in enumerate(files)), schema)
