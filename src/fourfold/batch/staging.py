"""The staging directory: where a job's parts wait for the one commit, and how a killed job resumes.

    >>> # staging = Staging(Path("scores/.staging-date=2025-04-15"))
    >>> # done = staging.open(identity, resume=True)      # {fragment index: its Counts} of an earlier run
    >>> # ... the engine writes part-00003.parquet, then part-00003.done ...
    >>> # staging.clear_markers()                          # just before the sink publishes it

Layout: ``_job.json`` (the job's identity: model version, runtime, every input file's size and mtime,
ids, events ...), ``part-NNNNN.parquet`` + ``part-NNNNN.done`` (the fragment's counts, written last: a
fragment is done once its marker exists), ``_quarantine/part-NNNNN.parquet``, ``_input/`` (a spooled SQL
query) and ``_pit/`` (the indexed event log, for worker processes).

``--resume`` reuses the directory only when its identity equals this job's; otherwise it refuses
(409) naming what changed - so a resumed output never mixes fragments of two inputs or two runtimes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from fourfold.batch.rows import Counts
from fourfold.errors import ConflictError, RequestError

__all__ = ["JOB_FILE", "Staging", "done_marker", "home_staging", "write_json"]

JOB_FILE = "_job.json"
_BOOKKEEPING = ("_input", "_pit", "_spark")  # directories of the engines' own, never published


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def done_marker(staging: Path, index: int) -> Path:
    return staging / f"part-{index:05d}.done"


def home_staging(*ident: str | None) -> Path:
    """A private staging directory under ``$FOURFOLD_HOME/batch/`` for a job whose destination is not a
    directory (one per output, table and partition, so a re-run with ``--resume`` finds it)."""
    from fourfold.settings import Settings

    digest = hashlib.sha256(json.dumps(list(ident)).encode()).hexdigest()[:16]
    return Settings().home / "batch" / f"staging-{digest}"


class Staging:
    """One job's staging directory (see the module's doc). ``created`` says whether this run made it
    (and may remove it again on failure) or resumed an earlier run's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.created = False
        self._made: Path | None = None  # the topmost directory this run created (staging or a parent)

    def open(self, identity: dict[str, Any], *, resume: bool) -> dict[int, Counts]:
        """Start fresh, or (``resume``, same identity) return the fragments an earlier run finished."""
        job_file = self.path / JOB_FILE
        if resume and job_file.exists():
            _same_job(self.path, json.loads(job_file.read_text()), identity)
            return self.done()
        if self.path.exists():
            if not (job_file.exists() or _is_empty(self.path)):
                raise ConflictError(
                    f"{self.path} is in the way of the job's staging directory and was not made by fourfold "
                    "(no _job.json): move it away"
                )
            shutil.rmtree(self.path)
        top = self.path
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        try:
            self.path.mkdir(parents=True)
        except OSError as exc:
            raise RequestError(f"cannot create the staging directory {self.path}: {_why(exc)}") from None
        self.created, self._made = True, top
        write_json(job_file, identity)
        return {}

    def done(self) -> dict[int, Counts]:
        return {
            int(p.name[5:10]): Counts.from_json(json.loads(p.read_text()))
            for p in self.path.glob("part-*.done")
        }

    def has_progress(self) -> bool:
        """Whether a resumed run would skip work: a finished fragment, or a completely spooled query."""
        return any(self.path.glob("part-*.done")) or (self.path / "_input" / "_COMPLETE").exists()

    def clear_markers(self) -> None:
        """Drop the engines' bookkeeping (markers, identity, spooled input, index) before publishing."""
        for marker in [*self.path.glob("part-*.done"), self.path / JOB_FILE]:
            marker.unlink(missing_ok=True)
        for name in _BOOKKEEPING:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def remove(self) -> None:
        """Remove the directory (and the empty parents this run created for it)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._made is None:
            return
        here = self.path.parent
        while here != self._made.parent and here.exists() and _is_empty(here):
            here.rmdir()
            here = here.parent


def _is_empty(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _why(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return f"{reason} (a parent of it is a file)"
    return reason


_NAMES = {"files": "the input files", "version": "the model version", "package": "the model package",
          "events_files": "the event log", "features": "the features file"}  # fmt: skip


def _same_job(staging: Path, before: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to resume ``staging`` unless the earlier run's identity is this job's (naming the change)."""
    if before == now:
        return
    changed = [k for k in dict.fromkeys([*now, *before]) if before.get(k) != now.get(k)]
    details = []
    for key in ("files", "events_files"):
        if key in changed:
            old = {f["path"]: f for f in before.get(key) or []}
            new = {f["path"]: f for f in now.get(key) or []}
            diff = sorted(p for p in {*old, *new} if old.get(p) != new.get(p))
            details.append(", ".join(diff[:3]) + (" ..." if len(diff) > 3 else "") + " changed")
    if "runtime" in changed:
        details.append(f"the earlier run scored on {before.get('runtime')}, this one on {now.get('runtime')}")
    what = ", ".join(_NAMES.get(k, k) for k in changed)
    raise ConflictError(
        f"--resume: {staging} was left by another job - {what} changed"
        + (f" ({'; '.join(details)})" if details else "")
        + "; run without --resume to start clean"
    )
