"""Single-row and 10k-row latency of the demo fraud model: fourfold's predictor (native and ONNX
runtimes) against the raw library calls it wraps, on the same model, rows and machine.

    .venv/bin/python bench/model_latency.py [--events 300000] [--repeat 2000]

Prints a table. The fourfold rows include input validation and assembly from a mapping (one row) or
an Arrow table (batch); the raw rows get a ready NumPy matrix.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=10_000)
    args = ap.parse_args()

    os.environ.setdefault("FOURFOLD_HOME", tempfile.mkdtemp(prefix="ff-bench-"))
    import onnxruntime as ort
    import pyarrow as pa
    import xgboost as xgb

    from fourfold import Predictor, load_package
    from fourfold.demo.run import run_demo

    out = Path(tempfile.mkdtemp(prefix="ff-bench-demo-"))
    report = run_demo(events=args.events, out_dir=out)
    pkg = load_package(out / "fraud-model")
    sample = pkg.sample()
    names = list(pkg.signature.feature_names)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, sample.num_rows, size=args.batch)
    batch_tbl = pa.table({n: sample[n].to_numpy()[idx] for n in names})
    batch64 = np.column_stack([batch_tbl[n].to_numpy() for n in names])
    row_map = {n: float(sample[n][0].as_py()) if sample[n][0].is_valid else None for n in names}
    row64 = batch64[:1].copy()

    booster = xgb.Booster(model_file=str(out / "fraud-model" / "artifacts" / "model.ubj"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        str(out / "fraud-model" / "onnx" / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    row32, batch32 = row64.astype(np.float32), batch64.astype(np.float32)
    native, onnx_p = Predictor(pkg, runtime="native"), Predictor(pkg, runtime="onnx")

    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        (
            "raw xgboost inplace_predict",
            lambda: booster.inplace_predict(row64),
            lambda: booster.inplace_predict(batch64),
        ),
        ("fourfold native (xgboost)", lambda: native.predict_one(row_map), lambda: native.predict(batch_tbl)),
        (
            "raw onnxruntime session.run",
            lambda: sess.run(["probabilities"], {"input": row32}),
            lambda: sess.run(["probabilities"], {"input": batch32}),
        ),
        ("fourfold onnx", lambda: onnx_p.predict_one(row_map), lambda: onnx_p.predict(batch_tbl)),
    ]
    np.testing.assert_allclose(native.predict(batch_tbl)["score"], booster.inplace_predict(batch64))
    np.testing.assert_allclose(
        onnx_p.predict(batch_tbl)["score"], native.predict(batch_tbl)["score"], atol=1e-5
    )

    print(f"\ndemo model: XGBoost, {len(names)} features, AUC {report.auc:.4f}; {os.cpu_count()} cores")
    print(
        f"{'runtime':<30} {'1 row p50':>10} {'1 row p99':>10} "
        f"{f'{args.batch // 1000}k rows':>10} {'rows/s':>12}"
    )
    for label, one, many in cases:
        single = timed(one, args.repeat)
        batch = timed(many, max(10, args.repeat // 100))
        p50, p99 = np.percentile(single, [50, 99])
        bms = float(np.median(batch)) / 1000
        print(f"{label:<30} {p50:>8.1f}us {p99:>8.1f}us {bms:>8.2f}ms {args.batch / bms * 1000:>12,.0f}")


if __name__ == "__main__":
    main()
