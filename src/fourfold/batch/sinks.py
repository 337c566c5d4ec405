"""Batch sinks: where a job's scored rows are committed, all at once or not at all.

    >>> # sink = open_sink(job)           # parquet directory, postgresql://..., redis:// or sqlite:/// store
    >>> # ... engine writes parquet parts into sink.staging ...
    >>> # sink.commit(summary)

Every engine writes parquet parts (``part-*.parquet``) and quarantined rows (``_quarantine/``) into
``sink.staging``; the sink then publishes them in one step:

* **parquet** (a directory, ``{key}`` templated or ``key=value`` partitioned): the staging directory sits
  next to the destination and becomes it by one rename (``_SUCCESS`` inside); a re-run replaces it.
* **postgresql://** (``postgres.py``): the parts are bulk-loaded with COPY in one transaction that first
  deletes the partition's rows - readers see the old partition or the new one, never half of either.
* **a feature store** (``redis://``, ``sqlite:///``; ``store.py``): each row's outputs are written as its
  entity's features (the seed's "Batch + Online" hybrid); re-running writes the same values again.

For the non-file sinks the staging directory lives under ``$FOURFOLD_HOME/batch/`` and the quarantine is
moved to ``quarantine`` (default ``$FOURFOLD_HOME/quarantine/<job>/``) on commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fourfold.errors import RequestError

if TYPE_CHECKING:
    from fourfold.batch.job import BatchJob, BatchSummary

__all__ = [
    "ParquetSink", "Sink", "clear_markers", "home_staging", "open_sink", "partition_values",
    "publish_quarantine", "quarantine_dir", "write_json",
]  # fmt: skip


class Sink(Protocol):
    @property
    def staging(self) -> Path:
        """Where engines write ``part-*.parquet`` and ``_quarantine/part-*.parquet``."""
        ...

    @property
    def destination(self) -> str:
        """Where the committed rows will be, for the summary."""
        ...

    @property
    def quarantine(self) -> Path:
        """Where the rejected rows are once committed."""
        ...

    def commit(self, summary: BatchSummary) -> None:
        """Publish every part in ``staging`` at once; afterwards ``staging`` is gone."""
        ...


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def partition_values(partition: str | None) -> dict[str, str]:
    """``"date=2025-04-15,region=eu"`` -> ``{"date": "2025-04-15", "region": "eu"}``."""
    if not partition:
        return {}
    out: dict[str, str] = {}
    for item in partition.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RequestError(f"--partition wants key=value[,key=value], got {partition!r}")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class ParquetSink:
    dest: Path

    @classmethod
    def for_job(cls, job: BatchJob) -> ParquetSink:
        parts = partition_values(job.partition)
        if "{" in job.output:
            try:
                return cls(Path(job.output.format(**parts)))
            except KeyError as exc:
                raise RequestError(
                    f"output template needs --partition {exc.args[0]}=...",
                ) from None
        dest = Path(job.output)
        for key, value in parts.items():
            dest = dest / f"{key}={value}"
        return cls(dest)

    @property
    def staging(self) -> Path:
        return self.dest.parent / f".staging-{self.dest.name}"

    @property
    def destination(self) -> str:
        return str(self.dest)

    @property
    def quarantine(self) -> Path:
        return self.dest / "_quarantine"  # moves with the staging directory

    def commit(self, summary: BatchSummary) -> None:
        staging, dest = self.staging, self.dest
        clear_markers(staging)
        write_json(staging / "_SUCCESS", asdict(summary))
        trash = None
        if dest.exists():  # a re-run replaces the partition
            trash = dest.parent / f".trash-{dest.name}-{uuid.uuid4().hex}"
            os.replace(dest, trash)
        os.replace(staging, dest)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def clear_markers(staging: Path) -> None:
    """Drop the engine's bookkeeping (resume markers, job identity, spooled input) before publishing."""
    for marker in [*staging.glob("part-*.done"), staging / "_job.json"]:
        marker.unlink(missing_ok=True)
    shutil.rmtree(staging / "_input", ignore_errors=True)


def home_staging(job: BatchJob) -> Path:
    """A private staging directory for a job whose destination is not a directory (one per output +
    partition, so a re-run with ``--resume`` finds it)."""
    from fourfold.settings import Settings

    ident = json.dumps([job.output, job.table, job.partition], sort_keys=True)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return Settings().home / "batch" / f"staging-{digest}"


def quarantine_dir(job: BatchJob, staging: Path) -> Path:
    """Where a non-file sink's rejected rows end up: ``job.quarantine`` or under $FOURFOLD_HOME."""
    from fourfold.settings import Settings

    dest = Path(job.quarantine) if job.quarantine else Settings().home / "quarantine" / staging.name
    for key, value in partition_values(job.partition).items():
        dest = dest / f"{key}={value}"
    return dest


def publish_quarantine(job: BatchJob, staging: Path) -> Path | None:
    """Move a non-file sink's quarantined rows to :func:`quarantine_dir` (replacing an earlier run's)."""
    src = staging / "_quarantine"
    if not src.exists():
        return None
    dest = quarantine_dir(job, staging)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))
    return dest


def open_sink(job: BatchJob) -> Sink:
    """The sink ``job.output`` names: ``postgresql://`` (needs ``job.table``), ``redis://`` or
    ``sqlite:///`` (a feature store), otherwise a parquet directory."""
    out = job.output
    if out.startswith(("postgresql://", "postgres://")):
        from fourfold.batch.postgres import PostgresSink

        return PostgresSink.for_job(job)
    if out.startswith(("redis://", "rediss://", "unix://", "sqlite://")):
        from fourfold.batch.store import StoreSink

        return StoreSink.for_job(job)
    if "://" in out and not out.startswith("file://"):
        raise RequestError(
            f"unsupported batch output {out!r}: use a directory, postgresql://, redis:// or sqlite:///",
        )
    return ParquetSink.for_job(job)
