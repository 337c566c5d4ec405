"""The export-target contract: one module per format turns a package's model into files for a bundle.

``export(pkg, out, *, opset, quantize) -> Exported`` writes the model file(s) under ``out`` (a fresh
staging directory) and says how the edge runtime loads them (``spec``, the manifest's ``model`` entry,
read by :func:`fourfold.edge.runners.load_runner`). The gate (:mod:`fourfold.embedded.gate`) then runs
the written files through that runner and holds them to the native model; a target never judges itself.
A target that cannot be run on this machine (Core ML on Linux) says so in ``spec["runner"] = None`` and
``info["unverified"]`` (why), and the gate refuses it unless forced.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

__all__ = ["FORMATS", "Exported", "Exporter", "get_exporter"]


@dataclass(frozen=True)
class Exported:
    spec: dict[str, Any]  # format, file, input_dtype, + whatever the format's runner needs
    files: tuple[str, ...]  # every file written under out, relative, "/"-separated
    info: dict[str, Any] = field(default_factory=dict)  # converter + versions, options, notes


Exporter = Callable[..., Exported]

#: format name -> "module:function" in this package
FORMATS: dict[str, str] = {
    "onnx": "onnx_target:export",
    "c": "c_target:export",
    "tflite": "tflite_target:export",
    "executorch": "executorch_target:export",
    "coreml": "coreml_target:export",
}


def get_exporter(fmt: str) -> Exporter:
    from fourfold.errors import InvalidOptionError

    target = FORMATS.get(fmt)
    if target is None:
        raise InvalidOptionError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    module_name, fn = target.split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    exporter: Exporter = getattr(module, fn)
    return exporter
