"""The verification gate every edge bundle passes before it is written: the exported file is loaded the
way a device loads it (the edge runtime's own runner, production session options) and held to the
package's native model.

* ONNX files: ``onnx.checker.check_model(full_check=True)`` first;
* parity groups: the package's sample rows; split probes (each tree split threshold, and one float32
  step either side, from the ONNX graph of the package); decision-threshold probes (rows bisected to the
  threshold); the float64 straddle rows, reported, not gating (see :mod:`fourfold.model.parity`);
* verdict: no gating row beyond the tolerance (1e-5 with float64 inputs, 1e-4 float32; relative for
  regression) and no flipped label on the sample rows; flips on the probes are counted and reported.

A quantized variant has its own, looser and stated, parity: at most 1 % of gating rows beyond 0.01 and
at most 0.5 % of the sample's labels flipped; it is kept only when that holds and it is measurably faster
(one-row p50 at most 0.9x the float model's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fourfold.edge.runners import Runner, load_runner
from fourfold.embedded.targets import Exported
from fourfold.extras import require
from fourfold.model.check import RowCheck
from fourfold.model.package import ModelPackage
from fourfold.model.parity import ParityReport, boundary_probes, compare, split_probes, tree_splits

__all__ = ["QUANTIZED_TOLERANCE", "GateResult", "one_row_p50_us", "verify"]

QUANTIZED_TOLERANCE = 0.01
QUANTIZED_BEYOND_SHARE = 0.01
QUANTIZED_FLIP_SHARE = 0.005


@dataclass(frozen=True)
class GateResult:
    passed: bool
    parity: ParityReport | None
    checks: dict[str, Any]
    runner: Runner | None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "checks": self.checks,
            "parity": None if self.parity is None else self.parity.to_dict(),
        }

    def summary(self) -> str:
        if self.parity is None:
            return f"gate {'passed' if self.passed else 'FAILED'}: {self.reason}"
        text = (
            self.parity.summary()
            .replace("parity passed", "gate passed")
            .replace("parity FAILED", "gate FAILED")
        )
        flips = self.sample_flips
        return (
            text
            + (f"; {flips} on the sample rows" if flips else "")
            + (f" ({self.reason})" if self.reason else "")
        )

    @property
    def sample_flips(self) -> int:
        if self.parity is None or "sample" not in self.parity.groups:
            return 0
        return self.parity.groups["sample"].label_flips


def _splits(pkg: ModelPackage, staging: Path, exported: Exported) -> list[tuple[int, float]]:
    """Tree split thresholds from an ONNX graph of the same model (the exported file, the package's
    compiled one, or the package's own ONNX model); none for models that are not tree ensembles."""
    onnx = require("onnx", "onnx", "verifying an export")
    candidates = []
    if exported.spec.get("format") == "onnx":
        candidates.append(staging / exported.spec["file"])
    stored = pkg.runtimes.get("onnx")
    if stored:
        candidates.append(pkg.path / stored["file"])
    for path in candidates:
        if path.is_file():
            return tree_splits(onnx.load(str(path)))
    return []


def verify(
    pkg: ModelPackage,
    staging: Path,
    exported: Exported,
    native: Any,
    *,
    base: np.ndarray,
    probes: int = 3000,
    seed: int = 0,
    quantized: bool = False,
) -> GateResult:
    checks: dict[str, Any] = {}
    spec = exported.spec
    if spec.get("runner", True) is None:
        why = exported.info.get("unverified", "no runtime for this format on this machine")
        return GateResult(False, None, {"run": f"not run: {why}"}, None, f"unverified: {why}")
    if spec.get("format") == "onnx":
        onnx = require("onnx", "onnx", "verifying an export")
        onnx.checker.check_model(str(staging / spec["file"]), full_check=True)
        checks["onnx_checker"] = "passed (full_check)"
    runner = load_runner(staging, spec, pkg.signature.task)
    checks["loaded"] = f"{type(runner).__name__}, input {np.dtype(runner.input_dtype).name}"
    sig = pkg.signature
    groups = {
        "sample": base,
        "split_probes": split_probes(base, _splits(pkg, staging, exported), limit=probes, seed=seed),
    }
    if sig.task == "binary":
        groups["boundary_probes"] = boundary_probes(base, native.predict_raw, pkg.threshold)
        groups["float64_straddle"] = boundary_probes(
            base, native.predict_raw, pkg.threshold, limit=64, float32=False
        )
    groups = {name: _valid(pkg, rows) for name, rows in groups.items()}
    float32 = np.dtype(runner.input_dtype) == np.float32 or all(f.dtype == "float32" for f in sig.inputs)
    tolerance = QUANTIZED_TOLERANCE if quantized else (1e-4 if float32 else 1e-5)
    report = compare(
        groups, native.predict_raw, runner.predict_raw, sig, pkg.threshold,
        tolerance=tolerance, informational=frozenset({"float64_straddle"}),
    )  # fmt: skip
    one = base[:1].astype(runner.input_dtype)
    runner.row[...] = one
    single = runner.score_row()
    batch = runner.predict_raw(one)[0]
    if not np.allclose(
        np.asarray(single, dtype=np.float64), np.asarray(batch, dtype=np.float64), rtol=0, atol=1e-9
    ):
        return GateResult(
            False, report, checks, runner, f"the one-row path gives {single}, the batch path {batch}"
        )
    checks["one_row_path"] = "agrees with the batch path"
    sample_rows = len(base)
    flips = report.groups["sample"].label_flips if "sample" in report.groups else 0
    if quantized:
        share = report.beyond_tolerance / max(report.rows, 1)
        ok = share <= QUANTIZED_BEYOND_SHARE and flips <= QUANTIZED_FLIP_SHARE * sample_rows
        reason = (
            f"quantized parity: {share:.2%} of rows beyond {QUANTIZED_TOLERANCE} (at most "
            f"{QUANTIZED_BEYOND_SHARE:.0%}), {flips} of {sample_rows} sample labels flipped (at most "
            f"{QUANTIZED_FLIP_SHARE:.1%})"
        )
        return GateResult(ok, report, checks, runner, reason)
    ok = report.passed and flips == 0
    return GateResult(
        ok, report, checks, runner, "" if flips == 0 else f"{flips} flipped label(s) on the sample"
    )


def _valid(pkg: ModelPackage, rows: np.ndarray) -> np.ndarray:
    """Probe rows as the model can be called with them: integer and boolean features rounded (a probe
    bisects in float; a category code of 2.5 is not an input), rows the signature's check refuses dropped."""
    if len(rows) == 0:
        return rows
    rows = rows.copy()
    for j, f in enumerate(pkg.signature.inputs):
        if not f.is_float:
            rows[:, j] = np.rint(rows[:, j])
    checked = RowCheck(pkg.signature, np.float64).check(rows)
    kept: np.ndarray = rows[checked.ok]
    return kept


def one_row_p50_us(runner: Runner, row: np.ndarray, calls: int = 2000) -> float:
    """The median microseconds of ``score_row`` on one row."""
    runner.row[...] = row.astype(runner.input_dtype)
    for _ in range(100):
        runner.score_row()
    times = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        runner.score_row()
        times[i] = clock() - t0
    return float(np.median(times)) / 1000
