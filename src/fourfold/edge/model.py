"""``EdgeModel``: an edge bundle loaded in-process - the manifest read, every file's sha256 verified, the
format's runner built once, inputs checked with the core's rules and messages, outputs in the core's form.

    >>> # m = EdgeModel("fraud-edge/")
    >>> # m.predict_one({"amount": 310.5, "hour": 3, ...})   # {'score': 0.91, 'label': 1}
    >>> # m.predict(matrix)["score"]                          # [rows, features] in m.feature_order
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .checks import RowCheck
from .runners import Runner, load_runner

__all__ = ["MANIFEST", "BundleError", "EdgeModel", "read_manifest", "verify_files"]

MANIFEST = "edge.json"
FORMAT = "fourfold-edge/1"


class BundleError(RuntimeError):
    """The bundle cannot be used: a missing or tampered file, an unknown format, another platform."""


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{directory} is not an edge bundle: it has no {MANIFEST}") from None
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(
            f"{path}: unknown bundle format {manifest.get('format')!r} (this runtime reads {FORMAT})"
        )
    return manifest


def verify_files(directory: Path, files: Mapping[str, str]) -> None:
    """Every file the manifest lists exists and has its recorded sha256."""
    for rel, want in files.items():
        path = directory / rel
        if not path.is_file():
            raise BundleError(f"the bundle's file {rel} is missing")
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != want:
            raise BundleError(f"the bundle's file {rel} was changed after export (sha256 mismatch)")


class EdgeModel:
    """One bundle's model, ready to score rows in-process.

    ``strict=True`` refuses features the signature does not name; ``verify=False`` skips the sha256 of
    every file at load (a device that verified the bundle when it installed it)."""

    def __init__(self, path: str | os.PathLike[str], *, strict: bool = False, verify: bool = True) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if verify:
            verify_files(self.path, self.manifest["files"])
        m = self.manifest
        self.task: str = m["task"]
        self.threshold = float(m.get("threshold", 0.5))
        self.feature_order: tuple[str, ...] = tuple(m["feature_order"])
        self.classes: list[Any] = list(m.get("classes") or [])
        self.runner: Runner = load_runner(self.path, m["model"], self.task)
        self.input_dtype = self.runner.input_dtype
        self.rules = RowCheck(
            m["signature"]["inputs"], self.input_dtype, strict=strict, model=m.get("model_label", "the model")
        )
        self._row = self.runner.row
        self._binary = self.task == "binary"

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str | None:
        v = self.manifest.get("version")
        return None if v is None else str(v)

    def predict_one(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Score one mapping of feature name to number: ``{"score", "label"}`` (binary),
        ``{"probabilities", "label"}`` (multiclass) or ``{"value"}`` (regression), as Python scalars."""
        self.rules.one_into(row, self._row)
        raw = self.runner.score_row()
        if self._binary:
            return {"score": raw, "label": int(raw > self.threshold)}
        if self.task == "multiclass":
            probs = [float(p) for p in raw]
            return {"probabilities": probs, "label": int(np.argmax(raw))}
        return {"value": float(raw)}

    def score_one(self, row: Mapping[str, Any]) -> float:
        """The raw score of one row: the positive class's probability (binary) or the value."""
        self.rules.one_into(row, self._row)
        return float(self.runner.score_row())

    def predict(self, x: Any) -> dict[str, np.ndarray]:
        """Score a ``[rows, features]`` array whose columns are in :attr:`feature_order`."""
        matrix = self.rules.array(x, self.input_dtype)
        if len(matrix) == 0:
            return _finish(self.task, np.empty((0,) if self.task != "multiclass" else (0, 0)), self.threshold)
        return _finish(self.task, self.runner.predict_raw(matrix), self.threshold)

    def __repr__(self) -> str:
        label = self.manifest.get("model_label", self.name)
        return f"<EdgeModel {label} format={self.manifest['model']['format']}>"


def _finish(task: str, raw: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    if task == "binary":
        return {"score": raw, "label": (raw > threshold).astype(np.int64)}
    if task == "multiclass":
        return {"probabilities": raw, "label": np.argmax(raw, axis=1).astype(np.int64)}
    return {"value": raw}
