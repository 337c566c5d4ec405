"""What a deployment needs to know of the model: its name, version, flavor, serving runtime, whether it
reads windowed or entity features from a store, and the extras an image must install to load it.

>>> ModelInfo("fraud", "3", "xgboost", "onnx", reads_store=True, path=None).extras
('xgboost', 'onnx')
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fourfold.registry.resolve import resolve

__all__ = ["ModelInfo", "model_info"]

# the extra that brings each flavor's library (sklearn and skops are in the core install)
_FLAVOR_EXTRA = {"xgboost": "xgboost", "lightgbm": "lightgbm", "torch": "torch", "onnx": "onnx"}
# flavors whose wheels need the system's OpenMP runtime (libgomp1), absent from slim images
OPENMP_FLAVORS = frozenset({"lightgbm", "xgboost"})


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str | None  # the registry's version; None for a package given by path
    flavor: str
    runtime: str  # what `fourfold compile` measured and recorded: native, onnx or c
    reads_store: bool  # the package has a features.yaml: windowed or entity features from a store
    path: Path | None  # the package directory (copied into the image with --model-from image)
    digest: str = ""  # the first 12 hex digits of the manifest's sha256: a tag when there is no version

    @property
    def extras(self) -> tuple[str, ...]:
        """The extras the model needs: its flavor's library (kept as the fallback runtime), and ONNX
        Runtime when ONNX is the runtime it is served with."""
        out = [_FLAVOR_EXTRA[self.flavor]] if self.flavor in _FLAVOR_EXTRA else []
        if self.runtime == "onnx" and "onnx" not in out:
            out.append("onnx")
        return tuple(out)

    @property
    def tag(self) -> str:
        return self.version if self.version else (self.digest or "latest")


def model_info(uri: str) -> ModelInfo:
    """Resolve ``uri`` (verifying its files) and read what a deployment needs from its manifest."""
    pkg = resolve(uri)
    manifest = pkg.path / "fourfold.yaml"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:12] if manifest.is_file() else ""
    features = pkg.features()
    return ModelInfo(
        name=pkg.name,
        version=pkg.version,
        flavor=pkg.flavor,
        runtime=pkg.serving_runtime(),
        reads_store=features is not None and bool(features.windowed or features.entity_features),
        path=pkg.path,
        digest=digest,
    )
