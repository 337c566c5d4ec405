"""``fourfold compile``: convert a package's model to ONNX, check it, prove parity, store it.

    >>> # report = compile_package("./pkg")              # refuses when parity fails
    >>> # report = compile_package("./pkg", force=True)  # stores it unverified: auto keeps native

Steps: the flavor's converter (skl2onnx with zipmap off, onnxmltools for XGBoost / LightGBM,
``torch.onnx.export`` for PyTorch) -> ``onnx.checker.check_model(full_check=True)`` -> an ONNX Runtime
session as production builds it -> parity against the native model on the stored sample plus split and
boundary probes -> ``onnx/model.onnx`` and the report written into the package. With ``c=True`` a tree
ensemble is also compiled to C (:mod:`fourfold.model.ctrees`) and held to the same probes (no label
flip allowed) before its ``c/`` directory joins the package.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from typing import Any

import numpy as np

from fourfold.errors import ConversionError, FourfoldError, ParityError
from fourfold.extras import require
from fourfold.model.check import RowCheck
from fourfold.model.flavors import get_flavor
from fourfold.model.package import ModelPackage, load_package, replace_dir, sha256_file, write_manifest
from fourfold.model.parity import ParityReport, boundary_probes, compare, split_probes, tree_splits
from fourfold.model.runtimes import OnnxRuntime

__all__ = ["base_rows", "choose_runtime", "compile_package"]

ONNX_FILE = "onnx/model.onnx"
C_DIR = "c"


def compile_package(
    model: str | os.PathLike[str] | ModelPackage,
    *,
    force: bool = False,
    trusted: bool = False,
    probes: int = 3000,
    seed: int = 0,
    c: bool = False,
) -> ParityReport:
    """Add a verified ONNX runtime to a package (a directory or a loaded package) and record the runtime
    every pattern serves it with (:func:`choose_runtime`). ``fourfold.compile_model`` also takes a
    ``models:/`` URI. ``c=True`` also compiles a tree ensemble to a C library under ``c/``
    (:mod:`fourfold.model.ctrees`), held to the same parity gate with no label flip allowed, and a
    candidate runtime like the others; its report is in the manifest (``runtimes.c.parity``)."""
    pkg = load_package(model.path if isinstance(model, ModelPackage) else model)
    onnx = require("onnx", "onnx", "compiling to ONNX")
    ort = require("onnxruntime", "onnx", "compiling to ONNX")
    flavor = get_flavor(pkg.flavor)
    n_features = len(pkg.signature.inputs)
    try:
        proto, converter = flavor.to_onnx(pkg.path / "artifacts", pkg.options, n_features, trusted=trusted)
        onnx.checker.check_model(proto, full_check=True)
        payload = proto.SerializeToString()
        runtime = OnnxRuntime(payload, task=pkg.signature.task)
    except FourfoldError:
        raise
    except Exception as exc:
        raise ConversionError(f"converting {pkg.label} ({pkg.flavor}) to ONNX failed: {exc}") from exc

    native = pkg.load_native(trusted=trusted)
    base = base_rows(pkg, seed)
    report = _parity(pkg, base, native.predict_raw, runtime.predict_raw, proto, probes=probes, seed=seed)
    if not report.passed and not force:
        worst = report.worst
        raise ParityError(
            f"{pkg.label}: the ONNX conversion fails parity and was not stored: {report.summary()}; "
            f"worst in {worst.get('group')}: native {worst.get('reference')} "
            f"vs onnx {worst.get('candidate')}. "
            "Use force=True (--force) to store it anyway; the predictor will then keep the native runtime "
            "unless runtime='onnx' is asked for"
        )
    manifest = dict(pkg.manifest)
    c_runtime = None
    if c:  # built and gated before anything is written: a refused C build leaves the package as it was
        c_runtime, manifest = _compile_c(
            pkg, manifest, base, native.predict_raw, proto, force, trusted, probes, seed
        )
    elif manifest.get("runtimes", {}).get("c", {}).get("verified"):
        c_runtime = _existing_c(pkg)
    target = pkg.path / ONNX_FILE
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, target)
    manifest["files"] = dict(manifest["files"]) | {ONNX_FILE: sha256_file(target)}
    manifest["runtimes"] = dict(manifest.get("runtimes", {})) | {
        "onnx": {
            "file": ONNX_FILE,
            "verified": report.passed,
            "forced": not report.passed,
            "input_dtype": np.dtype(runtime.input_dtype).name,
            "opset": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
            "onnx_version": onnx.__version__,
            "onnxruntime_version": ort.__version__,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "parity": report.to_dict(),
            **converter,
        }
    }
    knob = getattr(native, "set_threads", None)
    if knob is not None:
        knob(1)  # measured as the patterns run it: one native thread per model call
    candidates = {"native": native.predict_raw}
    if report.passed:
        candidates["onnx"] = runtime.predict_raw
    if c_runtime is not None:
        candidates["c"] = c_runtime.predict_raw
    manifest["serving"] = choose_runtime(candidates, base)
    write_manifest(pkg.path, manifest)
    return report


def _compile_c(
    pkg: ModelPackage,
    manifest: dict[str, Any],
    base: np.ndarray,
    native: Any,
    proto: Any,
    force: bool,
    trusted: bool,
    probes: int,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """Build the C library beside the package, gate it, move it into ``c/``: (its runner if verified,
    the manifest with its files and record)."""
    from fourfold.edge.c_runner import CRunner
    from fourfold.model.ctrees import build_c

    building = pkg.path / ".c.building"
    try:
        record = build_c(pkg, building, trusted=trusted)
        runner = CRunner(building, record["spec"], pkg.signature.task)
        report = _parity(pkg, base, native, runner.predict_raw, proto, probes=probes, seed=seed)
        verified = report.passed and report.label_flips == 0
        if not verified and not force:
            worst = report.worst
            raise ParityError(
                f"{pkg.label}: the compiled C library fails parity and was not stored: {report.summary()} "
                f"(the C runtime allows no label flip); worst in {worst.get('group')}: native "
                f"{worst.get('reference')} vs c {worst.get('candidate')}. Use force=True (--force) to store "
                "it anyway, unverified"
            )
        replace_dir(building, pkg.path / C_DIR)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    files = {k: v for k, v in manifest["files"].items() if not k.startswith(f"{C_DIR}/")}
    manifest = manifest | {"files": files | {f"{C_DIR}/{k}": v for k, v in record.pop("files").items()}}
    manifest["runtimes"] = dict(manifest.get("runtimes", {})) | {
        "c": {
            "dir": C_DIR,
            "verified": verified,
            "forced": not verified,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "parity": report.to_dict(),
            **record,
        }
    }
    # the runner loaded from .c.building keeps its mapping; score the candidate from the moved files
    return (CRunner(pkg.path / C_DIR, record["spec"], pkg.signature.task) if verified else None), manifest


def _existing_c(pkg: ModelPackage) -> Any:
    """The package's verified C runtime from an earlier ``--c`` compile, when it loads here."""
    from fourfold.edge.c_runner import CRunner

    info = pkg.runtimes["c"]
    try:
        return CRunner(pkg.path / info["dir"], info["spec"], pkg.signature.task)
    except OSError:  # built on another platform: not a candidate here
        return None


def choose_runtime(candidates: dict[str, Any], base: np.ndarray) -> dict[str, Any]:
    """Pick the runtime every pattern serves the package with, once, by measuring each verified one on
    the two workloads the patterns have: one row (online, streaming's small polls, embedded) and a large
    batch (batch, streaming's big polls), each with one thread. The pick is the runtime whose slower
    workload is the least behind the best runtime on it (the smallest worst-case ratio): one runtime, so
    every pattern gives the same answer, and no workload far off its best.

        >>> # choose_runtime({"native": m.predict_raw, "onnx": rt.predict_raw, "c": lib.predict_raw}, rows)
        {'runtime': 'c', 'order': ['c', 'onnx', 'native'], ...}"""
    import time

    rows = np.ascontiguousarray(np.tile(base, (max(1, 20_000 // max(len(base), 1)), 1)))
    one = np.ascontiguousarray(base[:1])
    measured: dict[str, dict[str, float]] = {}
    for name, predict in candidates.items():
        predict(rows[:64])  # warm: lazy initialisation, caches
        times = []
        for _ in range(200):
            t0 = time.perf_counter_ns()
            predict(one)
            times.append(time.perf_counter_ns() - t0)
        start = time.perf_counter()
        predict(rows)
        seconds = max(time.perf_counter() - start, 1e-9)
        measured[name] = {"row_us": float(np.median(times)) / 1000, "rows_per_s": len(rows) / seconds}
    best_row = min(m["row_us"] for m in measured.values())
    best_batch = max(m["rows_per_s"] for m in measured.values())
    worst = {name: max(m["row_us"] / best_row, best_batch / m["rows_per_s"]) for name, m in measured.items()}
    order = sorted(worst, key=lambda n: (worst[n], n != "onnx"))
    return {
        "runtime": order[0],
        "order": order,  # where a runtime cannot be loaded (a C library built elsewhere), the next one
        "rule": "the smallest worst-case slowdown over one-row latency and batch throughput (1 thread)",
        "measured": {n: {k: round(v, 2) for k, v in m.items()} for n, m in measured.items()},
        "cores": os.cpu_count() or 1,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def base_rows(pkg: ModelPackage, seed: int = 0) -> np.ndarray:
    """The package's sample rows the model can score (float64), or standard-normal rows without one."""
    sample = pkg.sample()
    if sample is not None and sample.num_rows:
        checked = RowCheck(pkg.signature, np.float64).check(sample)
        if len(checked.x):
            return checked.x
    return np.random.default_rng(seed).standard_normal((256, len(pkg.signature.inputs)))


def _parity(
    pkg: ModelPackage, base: np.ndarray, native: Any, onnx_rt: Any, proto: Any, *, probes: int, seed: int
) -> ParityReport:
    sig = pkg.signature
    groups = {"sample": base, "split_probes": split_probes(base, tree_splits(proto), limit=probes, seed=seed)}
    if sig.task == "binary":
        groups["boundary_probes"] = boundary_probes(base, native, pkg.threshold)
        groups["float64_straddle"] = boundary_probes(base, native, pkg.threshold, limit=64, float32=False)
    float32_only = all(f.dtype == "float32" for f in sig.inputs)
    tolerance = 1e-4 if float32_only else 1e-5
    return compare(
        groups, native, onnx_rt, sig, pkg.threshold, tolerance=tolerance,
        informational=frozenset({"float64_straddle"}),
    )  # fmt: skip
