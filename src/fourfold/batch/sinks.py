"""Batch sinks: where a job's scored rows are committed, all at once or not at all.

    >>> # sink = open_sink("scores/", partition={"date": "2025-04-15"}, model_name="churn")
    >>> # sink.guard(protected=[Path("users/")], overwrite=False)   # before anything is staged
    >>> # ... an engine writes parquet parts into sink.staging ...
    >>> # sink.commit(summary)

Every engine writes parquet parts (``part-*.parquet``) and quarantined rows (``_quarantine/``) into
``sink.staging``; the sink then publishes them in one step:

* **parquet** (a directory, ``{key}`` templated or ``key=value`` partitioned): the staging directory sits
  next to the destination and becomes it by one rename (``_SUCCESS`` and the ``_FOURFOLD`` marker
  inside); a re-run replaces it - only ever a directory the guard (``guard.py``) lets it replace.
* **postgresql://** (``postgres.py``): the parts are bulk-loaded with COPY in one transaction that first
  deletes the partition's rows - readers see the old partition or the new one, never half of either.
* **a feature store** (``redis://``, ``sqlite:///``; ``store.py``): each row's outputs are written as its
  entity's features (the seed's "Batch + Online" hybrid); re-running writes the same values again.

For the non-file sinks the staging directory lives under ``$FOURFOLD_HOME/batch/`` and the quarantine is
moved to ``quarantine`` (default ``$FOURFOLD_HOME/quarantine/<job>/``) on commit.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from fourfold.batch.guard import guard_directory, resolve_path, write_marker
from fourfold.batch.options import output_kind
from fourfold.batch.staging import Staging, write_json
from fourfold.batch.summary import BatchSummary
from fourfold.errors import InvalidOptionError
from fourfold.features.definitions import entity_namespace

__all__ = ["ParquetSink", "Quarantine", "Sink", "open_sink"]


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

    def guard(self, protected: Sequence[Path], *, overwrite: bool) -> None:
        """Refuse, before anything is staged, a destination the commit must not replace."""
        ...

    def commit(self, summary: BatchSummary) -> None:
        """Publish every part in ``staging`` at once; afterwards ``staging`` is gone."""
        ...


@dataclass
class ParquetSink:
    dest: Path  # resolved: absolute, no symlink
    owner: str  # the model's name, recorded in the _FOURFOLD marker
    protected: tuple[Path, ...] = field(default=(), compare=False)  # set by guard(), checked again on commit
    overwrite: bool = False

    @classmethod
    def for_output(cls, output: str, partition: Mapping[str, str], owner: str) -> ParquetSink:
        if "{" in output:
            try:
                return cls(resolve_path(output.format(**partition)), owner)
            except (KeyError, IndexError, ValueError) as exc:
                raise InvalidOptionError(
                    f"--output template {output!r} needs --partition {exc.args[0]}=... ({exc})"
                ) from None
        dest = Path(output.removeprefix("file://"))
        for key, value in partition.items():
            dest = dest / f"{key}={value}"
        return cls(resolve_path(dest), owner)

    @property
    def staging(self) -> Path:
        return self.dest.parent / f".staging-{self.dest.name}"

    @property
    def destination(self) -> str:
        return str(self.dest)

    @property
    def quarantine(self) -> Path:
        return self.dest / "_quarantine"  # moves with the staging directory

    def guard(self, protected: Sequence[Path], *, overwrite: bool) -> None:
        guard_directory(self.dest, protected=protected, owner=self.owner, overwrite=overwrite)
        self.protected, self.overwrite = tuple(protected), overwrite

    def commit(self, summary: BatchSummary) -> None:
        staging, dest = self.staging, self.dest
        Staging(staging).clear_markers()
        write_json(staging / "_SUCCESS", asdict(summary))
        write_marker(staging, self.owner)
        # the destination may have changed while the job ran: the same guard once more, just before
        guard_directory(dest, protected=self.protected, owner=self.owner, overwrite=self.overwrite)
        trash = None
        if dest.exists():  # a re-run replaces the partition
            trash = dest.parent / f".trash-{dest.name}-{uuid.uuid4().hex}"
            os.replace(dest, trash)
        os.replace(staging, dest)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


@dataclass
class Quarantine:
    """Where a non-file sink's rejected rows go (``--quarantine``, or under ``$FOURFOLD_HOME``), guarded
    like a parquet output: only an earlier fourfold quarantine is ever replaced."""

    dest: Path
    owner: str
    protected: tuple[Path, ...] = field(default=(), compare=False)
    overwrite: bool = False

    @classmethod
    def for_job(
        cls, quarantine: str | None, staging: Path, partition: Mapping[str, str], owner: str
    ) -> Quarantine:
        from fourfold.settings import Settings

        dest = Path(quarantine) if quarantine else Settings().home / "quarantine" / staging.name
        for key, value in partition.items():
            dest = dest / f"{key}={value}"
        return cls(resolve_path(dest), owner)

    def guard(self, protected: Sequence[Path], *, overwrite: bool) -> None:
        guard_directory(self.dest, protected=protected, owner=self.owner, overwrite=overwrite,
                        option="--quarantine")  # fmt: skip
        self.protected, self.overwrite = tuple(protected), overwrite

    def publish(self, staging: Path) -> Path | None:
        """Move ``staging/_quarantine`` here (replacing an earlier run's), marked as fourfold's."""
        src = staging / "_quarantine"
        if not src.exists():
            return None
        write_marker(src, self.owner)
        dest = self.dest
        self.guard(self.protected, overwrite=self.overwrite)  # it may have changed while the job ran
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dest))
        return dest


def open_sink(
    output: str, *, partition: Mapping[str, str], model_name: str, id_cols: Sequence[str] = (),
    table: str | None = None, quarantine: str | None = None, namespace: str | None = None,
) -> Sink:  # fmt: skip
    """The sink ``output`` names: ``postgresql://`` (needs ``table``), ``redis://`` or ``sqlite:///`` (a
    feature store: ``table``, else ``namespace`` - the feature set's entity namespace), otherwise a
    parquet directory."""
    kind = output_kind(output)
    if kind == "postgres":
        from fourfold.batch.postgres import PostgresSink

        return PostgresSink.open(output, table=table, partition=partition, id_cols=id_cols,
                                 quarantine=quarantine, owner=model_name)  # fmt: skip
    if kind == "store":
        from fourfold.batch.store import StoreSink

        return StoreSink.open(output, table=table, partition=partition, id_cols=id_cols,
                              quarantine=quarantine, model_name=model_name,
                              namespace=namespace or entity_namespace(model_name))  # fmt: skip
    return ParquetSink.for_output(output, partition, model_name)
