"""The ``c`` export target: a tree ensemble as a compiled library plus the sources to rebuild it.

    >>> # exported = export(pkg, Path("staging"), opset=None, quantize=False)
    >>> # exported.spec["file"], exported.files[:2]   # ('model.so', ('Makefile', 'model.so'))

Writes ``model.so`` (for this machine), ``src/`` (tl2cgen's dependency-free C and fourfold's wrapper)
and a ``Makefile`` that rebuilds ``model.so`` from ``src/`` on a device (``make``, or
``make CC=aarch64-linux-gnu-gcc`` to cross-compile). The package's own C runtime (``fourfold compile
--c``) is reused when it passed parity and was built for this machine; else the library is built here.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fourfold.embedded.targets import Exported
from fourfold.errors import InvalidOptionError

if TYPE_CHECKING:
    from fourfold.model.package import ModelPackage

__all__ = ["export"]

_RECORD_KEYS = (
    "compiler", "flags", "translation_units", "treelite_version", "tl2cgen_version", "machine", "system",
    "input_dtype", "entry_type", "result_type", "missing_tests_patched", "n_classes", "n_outputs", "n_trees",
)  # fmt: skip


def export(pkg: ModelPackage, out: Path, *, opset: int | None = None, quantize: bool = False) -> Exported:
    """Write the compiled tree library and its sources under ``out``; ``opset`` does not apply to C."""
    if quantize:
        raise InvalidOptionError(
            "--quantize is not supported for --format c: the compiled trees compare the model's own "
            "thresholds (export without --quantize, or use --format onnx)"
        )
    out = Path(out)
    info = pkg.runtimes.get("c") or {}
    spec = info.get("spec") or {}
    here = spec.get("machine") == platform.machine() and spec.get("system") == platform.system()
    if info.get("verified") and here:
        record: dict[str, Any] = dict(info)
        _copy(pkg.path / str(info["dir"]), out)
        reused = True
    else:
        from fourfold.model.ctrees import build_c

        with tempfile.TemporaryDirectory(prefix=".c-export.", dir=out.parent) as tmp:
            record = build_c(pkg, Path(tmp) / "c")
            _copy(Path(tmp) / "c", out)
        reused = False
    files = tuple(sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()))
    notes = {k: record[k] for k in _RECORD_KEYS if k in record}
    return Exported(
        spec=dict(record["spec"]),
        files=files,
        info={
            **notes,
            "reused_package_build": reused,
            "rebuild": "make (in the bundle's model directory; CC=... CFLAGS=... to cross-compile)",
        },
    )


def _copy(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, out, dirs_exist_ok=True)
