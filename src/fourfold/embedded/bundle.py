"""The edge bundle on disk: a directory written whole or not at all.

::

    fraud-edge/
      edge.json          manifest: signature and feature order, outputs, threshold, the model entry the
                         runtime loads, source versions, the gate's verdict, sha256 of every file
      model.onnx         the model (model.so + src/ for compiled trees, model.tflite, model.pte, ...)
      features.json      what the client computes: request fields, windowed definitions + the state
                         format, the entity features it must fetch or leave to the server
      parity.json        the gate's full report
      fourfold_edge/     the vendorable runtime (numpy + the format's runtime; nothing else of fourfold)

Written into a staging directory beside ``out`` and renamed into place: a failed export leaves nothing,
and a bundle a previous export wrote is replaced in one step. A directory that holds anything else is
never touched.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fourfold.edge as edge_runtime
from fourfold.edge.model import FORMAT, MANIFEST
from fourfold.errors import ConflictError
from fourfold.model.package import ModelPackage, replace_dir, sha256_file

__all__ = ["RUNTIME_DIR", "features_contract", "manifest_for", "staged", "write_manifest"]

RUNTIME_DIR = "fourfold_edge"


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh staging directory beside ``out``; on a clean exit it replaces ``out`` (which must be
    absent, empty, or a bundle fourfold wrote), else it is removed."""
    out = out.resolve()
    _refuse_foreign(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        yield staging
        replace_dir(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _refuse_foreign(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ConflictError(f"--out {out} is a file; give a directory for the bundle")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConflictError(
            f"--out {out} holds files that are not an edge bundle; fourfold will not replace them "
            "(give an empty or new directory)"
        )
    if Path.cwd().resolve().is_relative_to(out):
        raise ConflictError(f"--out {out} is the current directory or one of its parents; give another one")


def copy_runtime(staging: Path) -> list[str]:
    """The vendorable runtime, copied as ``fourfold_edge/`` (its .py files only)."""
    src = Path(edge_runtime.__file__).parent
    dst = staging / RUNTIME_DIR
    dst.mkdir()
    files = []
    for path in sorted(src.glob("*.py")):
        shutil.copy2(path, dst / path.name)
        files.append(f"{RUNTIME_DIR}/{path.name}")
    return files


def features_contract(pkg: ModelPackage) -> dict[str, Any] | None:
    """What a client must compute to call the model, from the package's feature set (None without one)."""
    fs = pkg.features()
    if fs is None:
        return None
    from fourfold.features.definitions import EntityFeature, RequestFeature, WindowedFeature
    from fourfold.features.state import FORMAT_VERSION, Layout

    request = [{"feature": f.name, "field": f.field} for f in fs.features if isinstance(f, RequestFeature)]
    windowed = [
        {"feature": f.name, "source": f.source, "agg": f.agg, "window_ms": f.window.ms, "column": f.column,
         "hop_ms": f.hop.ms if f.hop else None, "entity_key": fs.key_of(f),
         "timestamp": fs.source(f.source).timestamp, "empty_value": _plain(f.empty_value)}
        for f in fs.features if isinstance(f, WindowedFeature)
    ]  # fmt: skip
    entity = [
        {"feature": f.name, "entity": f.entity, "default": _plain(f.default)}
        for f in fs.features
        if isinstance(f, EntityFeature)
    ]
    out: dict[str, Any] = {
        "feature_set": fs.name,
        "order": [f.name for f in fs.features],
        "request": request,
        "windowed": windowed,
        "entity": entity,
        "allowed_lateness_ms": fs.allowed_lateness.ms,
        "definitions": fs.to_dict(),
    }
    if windowed:
        layout = Layout.of(fs)
        out["state"] = {
            "format": "FFKS",
            "version": FORMAT_VERSION,
            "fingerprint": layout.fingerprint,
            "columns": list(layout.columns),
            "horizon_ms": layout.horizon,
            "layout": "magic 'FFKS' | u16 version | u32 header length | u32 crc32 | JSON header | "
            "little-endian int64 timestamps, int64 sequence numbers, float64 columns "
            "(fourfold.features.state; docs/features.md)",
            "rule": "a window holds the entity's events with start <= ts < the event's ts, read before the "
            "event is folded in; events later than allowed_lateness_ms are not counted",
        }
    if entity:
        out["entity_note"] = (
            "entity features are precomputed per entity by a batch job into the online store: a device "
            "must be given them (or leave these rows to the server, e.g. with the cascade)"
        )
    return out


def manifest_for(pkg: ModelPackage, spec: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    sig = pkg.signature
    decision = pkg.manifest.get("decision")
    return {
        "format": FORMAT,
        "name": pkg.name,
        "version": pkg.version,
        "uri": pkg.uri,
        "model_label": pkg.label,
        "flavor": pkg.flavor,
        "task": sig.task,
        "threshold": pkg.threshold,
        "decision": decision,
        "classes": [_plain(c) for c in sig.classes],
        "signature": sig.to_dict(),
        "feature_order": list(sig.feature_names),
        "output_names": [o.name for o in sig.outputs],
        "model": spec,
        "export": info,
        "source": {
            "package_files": dict(pkg.manifest.get("files", {})),
            "versions": dict(pkg.manifest.get("versions", {})),
            "created_at": pkg.manifest.get("created_at"),
        },
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_manifest(staging: Path, manifest: dict[str, Any], files: list[str]) -> None:
    manifest["files"] = {rel: sha256_file(staging / rel) for rel in sorted(set(files))}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def write_json(staging: Path, name: str, data: Any) -> str:
    (staging / name).write_text(json.dumps(data, indent=2, default=_plain) + "\n")
    return name


def _plain(value: Any) -> Any:
    import math

    import numpy as np

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value
