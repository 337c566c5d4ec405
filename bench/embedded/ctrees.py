"""One row, one thread: the compiled tree library against ONNX Runtime and XGBoost itself.

    PYTHONPATH=src .venv/bin/python bench/embedded/ctrees.py [--trees 200] [--depth 6] [--calls 20000]

An XGBoost binary classifier like the demo's (200 trees, depth 6) on 30 synthetic float features is
saved and compiled with ``compile_model(c=True)`` (ONNX and the C library, both parity-gated); then each
runtime scores one row ``--calls`` times and the p50 / p99 of a call are printed, in microseconds:

* ``c score_row``: :class:`~fourfold.edge.c_runner.CRunner` - the row already in ``runner.row``, the
  ctypes call with its pointers built once;
* ``c row write + score_row``: the same with the row copied into ``runner.row`` first (what a caller does);
* ``ort session.run``: the package's ONNX file, one intra-op thread, the public ``InferenceSession.run``;
* ``xgboost inplace_predict``: the booster, ``nthread=1``.

Also printed: the build (compile seconds, translation units, .so size) and what ``choose_runtime``
measured and picked. A measurement, not a test: the machine is shared, so figures move between runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def percentiles(fn: Callable[[], Any], calls: int) -> tuple[float, float]:
    for _ in range(min(2000, calls)):  # warm: caches, branch predictors, lazy initialisation
        fn()
    times = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn()
        times[i] = clock() - t0
    return float(np.percentile(times, 50)) / 1000, float(np.percentile(times, 99)) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()

    import onnxruntime as ort
    import pyarrow as pa
    import xgboost as xgb

    from fourfold import compile_model, load_package, save_model
    from fourfold.edge.c_runner import CRunner

    rng = np.random.default_rng(0)
    n = 20_000
    x = rng.standard_normal((n, args.features))
    logit = x[:, 0] - 0.7 * x[:, 1] * x[:, 2] + 0.5 * np.sin(3 * x[:, 3]) + 0.3 * x[:, 4:10].sum(axis=1)
    y = (logit + rng.standard_normal(n) * 0.5 > 0).astype(np.int64)
    model = xgb.XGBClassifier(n_estimators=args.trees, max_depth=args.depth, n_jobs=1, random_state=0)
    model.fit(x, y)
    table = pa.table({f"f{i}": x[:256, i] for i in range(args.features)})

    with tempfile.TemporaryDirectory() as tmp:
        pkg = save_model(model, Path(tmp) / "m", name="bench", sample=table)
        t0 = time.perf_counter()
        compile_model(pkg.path, c=True)
        seconds = time.perf_counter() - t0
        pkg = load_package(pkg.path)
        info = pkg.runtimes["c"]
        so = pkg.path / "c" / "model.so"
        print(
            f"{args.trees} trees, depth {args.depth}, {args.features} features: compile (ONNX + C + gates + "
            f"measure) {seconds:.1f} s; C: {info['translation_units']} translation units, "
            f"{so.stat().st_size / 1e6:.2f} MB .so, parity max|diff| {info['parity']['max_abs_diff']:.3g}, "
            f"{info['parity']['label_flips']} flips over {info['parity']['rows']} rows"
        )
        serving = pkg.manifest["serving"]
        print(
            f"choose_runtime picked {serving['runtime']!r} (order {serving['order']}): {serving['measured']}"
        )

        runner = CRunner(pkg.path / "c", info["spec"], "binary")
        row64 = x[1000:1001].copy()
        row32 = row64.astype(np.float32)
        runner.row[0] = row32[0]

        def write_and_score() -> Any:
            runner.row[0] = row64[0]
            return runner.score_row()

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(pkg.path / "onnx" / "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        feed = {name: row32}
        booster = model.get_booster()
        booster.set_param({"nthread": 1})

        want = float(booster.inplace_predict(row64)[0])
        assert abs(runner.score_row() - want) < 1e-6, (runner.score_row(), want)
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("c score_row", runner.score_row),
            ("c row write + score_row", write_and_score),
            ("ort session.run (1 thread)", lambda: session.run(None, feed)),
            ("xgboost inplace_predict", lambda: booster.inplace_predict(row64)),
        ]
        print(f"one row, {args.calls} calls each:")
        for label, fn in cases:
            p50, p99 = percentiles(fn, args.calls)
            print(f"  {label:<28} p50 {p50:8.2f} us   p99 {p99:8.2f} us")


if __name__ == "__main__":
    main()
