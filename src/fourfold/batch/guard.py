"""The output guard: a batch job never destroys what it did not write.

    >>> # dest = resolve_path("scores/date=2025-04-15")            # absolute, symlinks resolved
    >>> # guard_directory(dest, protected=[Path("users/")], owner="churn", overwrite=False)
    >>> # ... publish ..., then write_marker(dest, owner="churn")

A committed parquet directory carries a ``_FOURFOLD`` marker (JSON: the model that wrote it and every
file it holds). A job may replace its destination only when the destination

* does not exist, or is an empty directory;
* holds a marker written for the same model, and nothing but the files that marker lists;
* or, with ``--overwrite``, is any other directory.

Never - not even with ``--overwrite`` - when it **is** an input (a file, the input directory, the event
log, the features file, the model package), **contains** one, lies **inside** an input directory (the
next run would read the scores as input), is an existing regular file, or is the current directory or
one of its parents (``-o .``). Paths are compared after resolving ``..``, relative paths and symlinks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from fourfold.batch.staging import write_json
from fourfold.errors import ConflictError, RequestError

__all__ = ["MARKER", "guard_directory", "resolve_path", "write_marker"]

MARKER = "_FOURFOLD"


def resolve_path(path: str | Path) -> Path:
    """``path`` absolute, with ``..`` and every symlink resolved (it need not exist)."""
    return Path(os.path.realpath(Path(str(path).removeprefix("file://")).expanduser()))


def guard_directory(
    dest: Path, *, protected: Sequence[Path], owner: str, overwrite: bool, option: str = "--output"
) -> None:
    """Refuse (see the module's doc) to let a job replace ``dest`` (already resolved)."""
    shown = f"{option} {dest}"
    cwd = resolve_path(Path.cwd())
    if cwd == dest or dest in cwd.parents:
        raise RequestError(
            f"{shown} is the current directory or one of its parents: name a directory for the scores, "
            f"e.g. {option} ./scores"
        )
    for p in protected:
        p = resolve_path(p)
        if p == dest:
            raise RequestError(f"{shown} is an input of the job: write the scores to another directory")
        if dest in p.parents:
            raise RequestError(
                f"{shown} contains an input of the job ({p}); replacing it would delete that: write the "
                "scores to another directory"
            )
        if p.is_dir() and p in dest.parents:
            raise RequestError(
                f"{shown} is inside the input directory {p}: the next run would read the scores as input; "
                "write them outside it"
            )
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir():
        raise ConflictError(
            f"{shown} is an existing file, not a directory fourfold wrote: remove it, or choose another "
            f"{option}"
        )
    foreign = _foreign_files(dest, owner)
    if foreign and not overwrite:
        raise ConflictError(f"{shown} {foreign}: pass --overwrite to replace the whole directory")


def _foreign_files(dest: Path, owner: str) -> str | None:
    """Why ``dest`` is not purely an earlier output of ``owner`` (None when it is, or is empty)."""
    try:
        marker = json.loads((dest / MARKER).read_text())
        ours, by = set(marker["files"]), str(marker["model"])
    except (OSError, ValueError, KeyError, TypeError):
        entries = sorted(p.name for _, p in zip(range(4), dest.iterdir(), strict=False))
        if not entries:
            return None
        shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
        return f"is not empty and was not written by fourfold (it holds {shown})"
    if by != owner:
        return f"holds the scores of model {by!r}, not {owner!r}"
    files = (p.relative_to(dest).as_posix() for p in dest.rglob("*") if not p.is_dir())
    extra = sorted(f for f in files if f not in ours and f != MARKER)
    if extra:
        shown = ", ".join(extra[:3]) + (" ..." if len(extra) > 3 else "")
        return f"holds files fourfold did not write ({shown})"
    return None


def write_marker(directory: Path, owner: str, files: Iterable[str] | None = None) -> None:
    """Mark ``directory`` as fourfold's: the model ``owner`` and every file in it (or ``files``)."""
    listed = (
        sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir())
        if files is None
        else sorted(files)
    )
    write_json(directory / MARKER, {"writer": "fourfold batch", "model": owner,
                                    "files": [f for f in listed if f != MARKER]})  # fmt: skip
