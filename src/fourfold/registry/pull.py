"""Pulling a model: a resolved package (files verified) copied to a directory, by one rename.

What ``fourfold models pull`` runs - the init container of a pod deployed with ``--model-from pull``.

    >>> # pull_package("models:/fraud/production", Path("/models/fraud"))   # True: copied
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fourfold.errors import ConflictError
from fourfold.registry.resolve import resolve

__all__ = ["pull_package"]

_MANIFEST = "fourfold.yaml"


def pull_package(uri: str, to: Path) -> bool:
    """Copy the package ``uri`` names to ``to``; False when ``to`` already holds that package (the same
    manifest: an init container that runs again). ``to`` must otherwise be absent or empty."""
    pkg = resolve(uri)
    to = Path(os.path.abspath(to))
    if to.exists():
        if not to.is_dir():
            raise ConflictError(f"--to {to} is a file; give a directory for the package")
        held = to / _MANIFEST
        if held.is_file() and held.read_bytes() == (pkg.path / _MANIFEST).read_bytes():
            resolve(str(to))  # verify what is there (a half-copied earlier pull fails here)
            return False
        if any(to.iterdir()):
            raise ConflictError(f"--to {to} holds something else than {uri}; give a new or empty directory")
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{to.name}.pull-", dir=to.parent))
    try:
        shutil.copytree(pkg.path, staging, dirs_exist_ok=True)
        resolve(str(staging))  # the copy verifies before it takes the name
        if to.exists():
            to.rmdir()  # empty (checked above)
        os.replace(staging, to)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return True
