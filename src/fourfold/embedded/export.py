"""``fourfold export``: a package -> an edge bundle that passed the gate, or no bundle at all.

    >>> # report = export_bundle("models:/fraud/production", "onnx", "fraud-edge/")
    >>> # report = export_bundle("./pkg", "c", "fraud-c/")                 # compiled trees
    >>> # report = export_bundle("./mlp", "onnx", "mlp-edge/", quantize="dynamic")

Steps: resolve the package -> the format's target writes the model file(s) into a staging directory ->
the gate (:mod:`fourfold.embedded.gate`) runs them with the edge runtime and holds them to the native
model -> optional dynamic quantization, kept only when its own parity holds and it is faster -> the
feature contract, the parity report, the vendorable runtime and the manifest -> one rename into ``out``.
A failed gate raises :class:`~fourfold.errors.ParityError` with the numbers and writes nothing, unless
``force`` (the manifest then says ``verified: false``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fourfold.embedded import bundle
from fourfold.embedded.gate import GateResult, one_row_p50_us, verify
from fourfold.embedded.targets import FORMATS, Exported, get_exporter
from fourfold.errors import InvalidOptionError, ParityError
from fourfold.model.compile import base_rows
from fourfold.model.package import ModelPackage
from fourfold.registry import resolve

__all__ = ["ExportReport", "export_bundle"]

QUANTIZE = ("dynamic",)
FASTER = 0.9  # a quantized model is kept only at <= 0.9x the float model's one-row p50


@dataclass(frozen=True)
class ExportReport:
    out: Path
    format: str
    gate: GateResult
    verified: bool
    files: tuple[str, ...]
    quantization: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "format": self.format,
            "verified": self.verified,
            "gate": self.gate.to_dict(),
            "quantization": self.quantization,
            "files": list(self.files),
        }


def export_bundle(
    model: str | os.PathLike[str] | ModelPackage,
    fmt: str,
    out: str | os.PathLike[str],
    *,
    quantize: str | None = None,
    opset: int | None = None,
    force: bool = False,
    trusted: bool = False,
    probes: int = 3000,
    seed: int = 0,
) -> ExportReport:
    if fmt not in FORMATS:
        raise InvalidOptionError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if quantize is not None and quantize not in QUANTIZE:
        raise InvalidOptionError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if opset is not None and fmt != "onnx":
        raise InvalidOptionError(f"--opset applies to --format onnx only, not {fmt}")
    pkg = model if isinstance(model, ModelPackage) else resolve(os.fspath(model))
    exporter = get_exporter(fmt)
    native = pkg.load_native(trusted=trusted)
    base = base_rows(pkg, seed)
    target = Path(out)
    with bundle.staged(target) as staging:
        exported = exporter(pkg, staging, opset=opset, quantize=quantize if fmt != "onnx" else None)
        gate = verify(pkg, staging, exported, native, base=base, probes=probes, seed=seed)
        if not gate.passed and not force:
            raise ParityError(_refusal(pkg, fmt, gate))
        quantization: dict[str, Any] = {}
        if quantize and fmt == "onnx" and gate.passed:
            exported, quantization = _quantized(pkg, staging, exported, gate, native, base, probes, seed)
        files = list(exported.files)
        spec = dict(exported.spec)
        spec["verified"] = gate.passed
        manifest = bundle.manifest_for(pkg, spec, exported.info)
        manifest["gate"] = {"passed": gate.passed, "forced": not gate.passed, "summary": gate.summary()}
        if quantization:
            manifest["quantization"] = quantization
        files.append(
            bundle.write_json(staging, "parity.json", gate.to_dict() | {"quantization": quantization})
        )
        contract = bundle.features_contract(pkg)
        if contract is not None:
            files.append(bundle.write_json(staging, "features.json", contract))
            manifest["features"] = "features.json"
        files += bundle.copy_runtime(staging)
        manifest["runtime"] = bundle.RUNTIME_DIR
        bundle.write_manifest(staging, manifest, files)
    return ExportReport(target.resolve(), fmt, gate, gate.passed, tuple(sorted(set(files))), quantization)


def _refusal(pkg: ModelPackage, fmt: str, gate: GateResult) -> str:
    text = f"{pkg.label}: the {fmt} export fails the gate and no bundle was written: {gate.summary()}"
    if gate.parity is not None and gate.parity.worst.get("group"):
        w = gate.parity.worst
        text += f"; worst in {w['group']}: native {w.get('reference')} vs {fmt} {w.get('candidate')}"
    return text + ". Use --force to write it anyway (marked unverified)"


def _quantized(
    pkg: ModelPackage, staging: Path, exported: Exported, gate: GateResult, native: Any, base: Any,
    probes: int, seed: int,
) -> tuple[Exported, dict[str, Any]]:  # fmt: skip
    from fourfold.embedded.onnx_target import quantize_dynamic

    spec = quantize_dynamic(staging, exported.spec)
    if spec is None:
        return exported, {"kept": False, "why": "nothing to quantize: the graph has no MatMul/Gemm weights"}
    q = Exported(spec, (spec["file"],), exported.info)
    qgate = verify(pkg, staging, q, native, base=base, probes=probes, seed=seed, quantized=True)
    record: dict[str, Any] = {"parity": qgate.reason, "summary": qgate.summary()}
    if qgate.passed and gate.runner is not None and qgate.runner is not None:
        fp, qp = one_row_p50_us(gate.runner, base[:1]), one_row_p50_us(qgate.runner, base[:1])
        record |= {"float_p50_us": round(fp, 2), "int8_p50_us": round(qp, 2)}
        if qp <= FASTER * fp:
            (staging / exported.spec["file"]).unlink()
            return Exported(spec, q.files, exported.info | {"quantized": spec["quantized"]}), record | {
                "kept": True
            }
        record["why"] = f"not faster: {qp:.1f} us vs {fp:.1f} us a row (needs <= {FASTER}x)"
    else:
        record["why"] = "its parity does not hold"
    (staging / spec["file"]).unlink()
    return exported, record | {"kept": False}
