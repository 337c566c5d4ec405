"""The ``executorch`` export target: a PyTorch package as an ExecuTorch program (``model.pte``).

The module is taken with fourfold's head (the sigmoid / softmax every runtime applies to logits), so
the program returns the raw output the core serves. ``torch.export`` with a dynamic batch of 1 to
``MAX_BATCH`` rows -> ``executorch.exir.to_edge_transform_and_lower`` with the XNNPACK partitioner ->
``to_executorch``. Should lowering to XNNPACK fail, the program is built for ExecuTorch's portable
kernels instead; ``spec["backend"]`` and ``info`` say which, and why.

    >>> # exported = export(load_package("./net"), Path("staging"), opset=None, quantize=None)
    >>> # exported.spec -> {"format": "executorch", "file": "model.pte", "backend": "xnnpack", ...}
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fourfold.embedded.noise import quiet
from fourfold.embedded.targets import Exported
from fourfold.errors import ConversionError, InvalidOptionError, UnsupportedModelError
from fourfold.extras import require

if TYPE_CHECKING:
    from fourfold.model.package import ModelPackage

__all__ = ["FILE", "MAX_BATCH", "export"]

FILE = "model.pte"
MAX_BATCH = 4096  # the upper bound of the dynamic batch: ExecuTorch plans the memory for it
_EXTRA = "executorch"


def export(
    pkg: ModelPackage, out: Path, *, opset: int | None = None, quantize: str | None = None
) -> Exported:
    """Write ``model.pte`` for a PyTorch package under ``out`` (``opset`` is ONNX's, not used here)."""
    if pkg.flavor != "torch":
        raise UnsupportedModelError(
            f"--format executorch takes PyTorch models; {pkg.label} is a {pkg.flavor} model "
            "(use --format onnx, or --format c for tree ensembles)"
        )
    if quantize is not None:
        raise InvalidOptionError(
            f"quantize={quantize!r} is not supported for --format executorch (float32 only); leave it unset"
        )
    torch = require("torch", "torch", "exporting to ExecuTorch")
    require("executorch", _EXTRA, "exporting to ExecuTorch (.pte)")
    head = pkg.load_native().head  # type: ignore[attr-defined]
    n_features = len(pkg.signature.inputs)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with quiet():
            program = torch.export.export(
                head, (torch.zeros(2, n_features, dtype=torch.float32),), dynamic_shapes=({0: batch},)
            )
    except Exception as exc:
        raise ConversionError(f"torch.export of {pkg.label} failed: {exc}") from exc
    payload, backend, notes = _lower(program)
    (out / FILE).write_bytes(payload)
    spec = {
        "format": "executorch",
        "file": FILE,
        "input_dtype": "float32",
        "method": "forward",
        "backend": backend,
        "batch": "dynamic",
        "max_batch": MAX_BATCH,
    }
    info = {
        "converter": "torch.export + executorch.exir.to_edge_transform_and_lower",
        "converter_version": version("executorch"),
        "torch": str(torch.__version__),
        "backend": backend,
        "bytes": len(payload),
    } | notes
    return Exported(spec, (FILE,), info)


def _lower(program: Any) -> tuple[bytes, str, dict[str, Any]]:
    """The program's bytes, the backend it runs on and what happened on the way."""
    with quiet():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        try:
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            delegated = _delegated(edge)
            if delegated:
                return bytes(edge.to_executorch().buffer), "xnnpack", {"delegated_calls": delegated}
            fallback = "XNNPACK took none of the graph's operators"
        except Exception as exc:  # lowering is best effort: the portable kernels run every ATen op
            fallback = f"lowering to XNNPACK failed: {type(exc).__name__}: {exc}"
        try:
            edge = to_edge_transform_and_lower(program)
            return bytes(edge.to_executorch().buffer), "portable", {"fallback": fallback}
        except Exception as exc:
            raise ConversionError(
                f"ExecuTorch could not build the program ({fallback}; portable: {exc})"
            ) from exc


def _delegated(edge: Any) -> int:
    graph = edge.exported_program().graph
    return sum(1 for node in graph.nodes if "executorch_call_delegate" in str(node.target))
