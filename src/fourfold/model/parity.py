"""Parity between two runtimes of one model: the stored sample rows, plus probes where a disagreement hides.

* **split probes**: for tree ensembles, rows whose feature sits exactly on a split threshold (and one
  float32 step either side) - where a float32 cast can flip a comparison;
* **boundary probes**: for binary classifiers, rows found by bisection between a positive and a negative
  sample row, whose score is within a hair of the decision threshold - where a tiny difference flips
  a label.

Both probe kinds use float32-representable values, so they gate on what the runtimes compute. The
``float64_straddle`` group (boundary rows in full float64, closer to a split than float32 resolves) is
reported but does not gate: a float32 runtime cannot tell those inputs apart, and the report says how
many such rows disagree.

Tolerances (absolute, on probabilities): 1e-5 for float64 inputs, 1e-4 for float32 inputs; regression
values get the same as a relative tolerance too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fourfold.model.outputs import finish
from fourfold.model.signature import Signature

__all__ = ["GroupReport", "ParityReport", "boundary_probes", "compare", "split_probes", "tree_splits"]

Score = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GroupReport:
    gating: bool
    rows: int
    max_abs_diff: float
    mean_abs_diff: float
    beyond_tolerance: int
    label_flips: int


@dataclass(frozen=True)
class ParityReport:
    passed: bool
    tolerance: float
    groups: dict[str, GroupReport]
    worst: dict[str, Any]

    @property
    def rows(self) -> int:
        return sum(g.rows for g in self.groups.values() if g.gating)

    @property
    def max_abs_diff(self) -> float:
        return max((g.max_abs_diff for g in self.groups.values() if g.gating), default=0.0)

    @property
    def beyond_tolerance(self) -> int:
        return sum(g.beyond_tolerance for g in self.groups.values() if g.gating)

    @property
    def label_flips(self) -> int:
        return sum(g.label_flips for g in self.groups.values() if g.gating)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"parity {verdict}: max |diff| {self.max_abs_diff:.3g} (tolerance {self.tolerance:g}) over "
            f"{self.rows} rows; {self.beyond_tolerance} beyond tolerance, {self.label_flips} label flip(s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "tolerance": self.tolerance,
            "rows": self.rows,
            "max_abs_diff": self.max_abs_diff,
            "beyond_tolerance": self.beyond_tolerance,
            "label_flips": self.label_flips,
            "groups": {k: asdict(v) for k, v in self.groups.items()},
            "worst": self.worst,
        }


def tree_splits(onnx_model: Any) -> list[tuple[int, float]]:
    """``(feature index, threshold)`` of every branch node of the tree ensembles in an ONNX graph."""
    from onnx import helper, numpy_helper

    splits: list[tuple[int, float]] = []
    for node in onnx_model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
            feats = helper.get_attribute_value(attrs["nodes_featureids"])
            if "nodes_values" in attrs:
                values = helper.get_attribute_value(attrs["nodes_values"])
            else:
                values = numpy_helper.to_array(helper.get_attribute_value(attrs["nodes_values_as_tensor"]))
            modes = helper.get_attribute_value(attrs["nodes_modes"])
            splits += [
                (int(f), float(v)) for f, v, m in zip(feats, values, modes, strict=True) if m != b"LEAF"
            ]
        elif node.op_type == "TreeEnsemble":
            feats = helper.get_attribute_value(attrs["nodes_featureids"])
            values = numpy_helper.to_array(helper.get_attribute_value(attrs["nodes_splits"]))
            splits += [(int(f), float(v)) for f, v in zip(feats, values, strict=True)]
    return splits


def split_probes(
    base: np.ndarray, splits: list[tuple[int, float]], *, limit: int, seed: int = 0
) -> np.ndarray:
    """Rows of ``base`` with one feature set on a split threshold or one float32 step either side."""
    if not splits or len(base) == 0:
        return np.empty((0, base.shape[1]))
    rng = np.random.default_rng(seed)
    uniq = np.unique(np.asarray(splits, dtype=np.float64), axis=0)
    pick = uniq[rng.choice(len(uniq), size=min(len(uniq), max(1, limit // 3)), replace=False)]
    feats = pick[:, 0].astype(np.int64)
    thr = pick[:, 1].astype(np.float32)
    values = np.concatenate(
        [thr, np.nextafter(thr, np.float32(np.inf)), np.nextafter(thr, np.float32(-np.inf))]
    ).astype(np.float64)
    feats = np.tile(feats, 3)
    rows = base[rng.integers(0, len(base), size=len(values))].astype(np.float64, copy=True)
    rows[np.arange(len(values)), feats] = values
    return rows


def boundary_probes(
    base: np.ndarray,
    score: Score,
    threshold: float,
    *,
    limit: int = 256,
    steps: int = 30,
    float32: bool = True,
) -> np.ndarray:
    """Rows whose score is next to ``threshold``: bisection between rows scored on either side of it.

    With ``float32`` the rows stay float32-representable; without, they converge on a split threshold in
    float64 and show what a float32 runtime makes of inputs closer to a split than float32 can resolve."""
    if len(base) < 2:
        return np.empty((0, base.shape[1]))
    s = score(base)
    pos, neg = base[s > threshold], base[s <= threshold]
    if len(pos) == 0 or len(neg) == 0:
        return np.empty((0, base.shape[1]))
    n = min(limit, max(len(pos), len(neg)))
    hi = pos[np.arange(n) % len(pos)].astype(np.float64)
    lo = neg[np.arange(n) % len(neg)].astype(np.float64)
    for _ in range(steps):
        mid = (lo + hi) / 2
        if float32:  # stay on values both runtimes see identically
            mid = mid.astype(np.float32).astype(np.float64)
        above = score(mid) > threshold
        hi = np.where(above[:, None], mid, hi)
        lo = np.where(above[:, None], lo, mid)
    return np.concatenate([lo, hi])


def compare(
    groups: dict[str, np.ndarray],
    reference: Score,
    candidate: Score,
    signature: Signature,
    threshold: float,
    *,
    tolerance: float,
    informational: frozenset[str] = frozenset(),
) -> ParityReport:
    """Score every group with both runtimes and report the differences."""
    reports: dict[str, GroupReport] = {}
    worst: dict[str, Any] = {"abs_diff": 0.0}
    regression = signature.task == "regression"
    for group, x in groups.items():
        if len(x) == 0:
            continue
        a, b = reference(x), candidate(x)
        diff = np.abs(a - b).reshape(len(x), -1).max(axis=1)
        allowed = tolerance * (1 + np.abs(a).reshape(len(x), -1).max(axis=1)) if regression else tolerance
        beyond = diff > allowed
        flips = 0
        if not regression:
            flips = int(
                np.sum(
                    finish(signature.task, a, threshold)["label"]
                    != finish(signature.task, b, threshold)["label"]
                )
            )
        gating = group not in informational
        reports[group] = GroupReport(
            gating, len(x), float(diff.max()), float(diff.mean()), int(beyond.sum()), flips
        )
        i = int(np.argmax(diff))
        if gating and diff[i] > worst["abs_diff"]:
            worst = {
                "abs_diff": float(diff[i]),
                "group": group,
                "row": {f: float(v) for f, v in zip(signature.feature_names, x[i], strict=True)},
                "reference": np.asarray(a[i]).tolist(),
                "candidate": np.asarray(b[i]).tolist(),
            }
    passed = all(r.beyond_tolerance == 0 for r in reports.values() if r.gating)
    return ParityReport(passed, tolerance, reports, worst)
