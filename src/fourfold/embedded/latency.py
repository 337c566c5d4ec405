"""``fourfold bench-embedded``: one model's single-row latency on every runtime it can run in-process -
the native library (through the predictor), ONNX Runtime and the compiled trees (through the edge
runtime, from bundles exported and gated now), and the cascade's local path - measured from a mapping,
input check included, one thread, interleaved rounds."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fourfold.edge import CascadeModel, EdgeModel
from fourfold.embedded.export import export_bundle
from fourfold.errors import FourfoldError
from fourfold.model.compile import base_rows
from fourfold.model.package import ModelPackage
from fourfold.model.predictor import Predictor
from fourfold.registry import resolve

__all__ = ["Latency", "bench_embedded"]

TREE_FLAVORS = ("xgboost", "lightgbm", "sklearn")


@dataclass(frozen=True)
class Latency:
    runtime: str
    p50_us: float | None
    p99_us: float | None
    note: str = ""


def _timed(fn: Callable[[], Any], calls: int) -> np.ndarray:
    for _ in range(min(200, calls)):
        fn()
    out = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out / 1000.0


def _call(model: EdgeModel, row: dict[str, float]) -> Callable[[], Any]:
    return lambda: model.predict_one(row)


def bench_embedded(uri: str, *, calls: int = 3000, rounds: int = 3, trusted: bool = False) -> list[Latency]:
    pkg: ModelPackage = resolve(uri)
    names = pkg.signature.feature_names
    x = base_rows(pkg)
    row = {n: float(v) for n, v in zip(names, x[0], strict=True)}
    cases: dict[str, Callable[[], Any]] = {}
    notes: dict[str, str] = {}
    native = Predictor(pkg, runtime="native", trusted=trusted)
    cases["native (predictor)"] = lambda: native.predict_one(row)
    with tempfile.TemporaryDirectory(prefix="ff-bench-embedded-") as tmp:
        edge: EdgeModel | None = None
        for fmt in ("onnx", "c"):
            if fmt == "c" and pkg.flavor not in TREE_FLAVORS:
                notes["c"] = "not a tree ensemble"
                continue
            try:
                export_bundle(pkg, fmt, Path(tmp) / fmt, trusted=trusted)
            except FourfoldError as exc:
                notes[fmt] = exc.message
                continue
            model = EdgeModel(Path(tmp) / fmt)
            edge = edge or model
            cases[f"{fmt} (edge runtime)"] = _call(model, row)
        if edge is not None and pkg.signature.task == "binary":
            cascade = CascadeModel(edge, None, low=1.0, high=1.0)
            cases["cascade, local path"] = lambda: cascade.predict_one(row)
        runs: dict[str, list[np.ndarray]] = {k: [] for k in cases}
        for _ in range(rounds):
            for name, fn in cases.items():
                runs[name].append(_timed(fn, calls))
    out = []
    for name, samples in runs.items():
        p50 = float(np.median([np.percentile(s, 50) for s in samples]))
        p99 = float(np.median([np.percentile(s, 99) for s in samples]))
        out.append(Latency(name, p50, p99))
    out += [Latency(f"{k} (edge runtime)", None, None, v) for k, v in notes.items()]
    return out
