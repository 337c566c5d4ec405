"""The output directory of ``fourfold deploy``: YAML text of resources, and one atomic write.

Everything is written into a staging directory beside ``out`` and renamed into place, so a failed run
leaves nothing and a directory an earlier run wrote is replaced in one step. A ``.fourfold-deploy``
marker (JSON: the model and every file written) says fourfold wrote the directory; a non-empty directory
without it is never replaced.

>>> print(to_yaml({"kind": "Service", "metadata": {"name": "a"}}), end="")
kind: Service
metadata:
  name: a
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fourfold.errors import ConflictError
from fourfold.model.package import replace_dir

__all__ = ["MARKER", "to_yaml", "write_tree"]

MARKER = ".fourfold-deploy"
_DIR_MODE, _FILE_MODE = 0o755, 0o644


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # shared dicts (labels) are written out each time, never as &anchors


def to_yaml(resource: Mapping[str, Any]) -> str:
    return yaml.dump(dict(resource), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)


def write_tree(out: Path, files: Mapping[str, str | Path], *, model: str) -> list[str]:
    """Write ``files`` (relative path -> text, or a directory to copy) as the directory ``out``; return
    the files written. ``out`` must be absent, empty, or a directory this function wrote before."""
    out = Path(os.path.abspath(out))
    _refuse_foreign(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    staging.chmod(_DIR_MODE)  # mkdtemp's 0700 would make the build context unreadable to others
    try:
        written: list[str] = []
        for rel, content in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copytree(content, target)
                _readable(target)
                written += sorted(str(p.relative_to(staging)) for p in target.rglob("*") if p.is_file())
            else:
                target.write_text(content)
                written.append(rel)
        marker = {"written_by": "fourfold deploy k8s", "model": model, "files": sorted(written)}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        replace_dir(staging, out)
        return sorted(written)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _readable(tree: Path) -> None:
    """Directories 0755, files 0644: the image's non-root user reads the model Docker copies as root's."""
    tree.chmod(_DIR_MODE)
    for p in tree.rglob("*"):
        p.chmod(_DIR_MODE if p.is_dir() else _FILE_MODE)


def _refuse_foreign(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ConflictError(f"--out {out} is a file; give a directory for the manifests")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConflictError(
            f"--out {out} holds files fourfold did not write (no {MARKER} marker); it will not replace "
            "them - give a new or empty directory"
        )
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise ConflictError(f"--out {out} is the current directory or one of its parents; give another one")
