"""Embedded single-row latency: fourfold's edge runtime against the raw runtimes it wraps and the native
libraries, on the demo's XGBoost model and a 30->64->64->1 MLP, one thread, same rows, same machine.

    .venv/bin/python bench/embedded/run.py [--events 200000] [--repeat 5000] [--rounds 3]

Each case is timed in ``--rounds`` interleaved rounds (the median of the rounds' p50 / p99 is printed),
so a burst of noise on the shared cores does not land on one case only. The fourfold rows start from a
mapping of feature name to value and include the input check; the raw rows get a ready array.
Floors (issue 11): EdgeModel.predict_one p50 <= 1.2x raw session.run, < 50 us and >= 10x faster than the
native library; the compiled trees <= 10 us p50 including the check.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import timed


def measure(cases: dict[str, Callable[[], Any]], repeat: int, rounds: int) -> dict[str, tuple[float, float]]:
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t = timed(fn, repeat, warmup=200)
            runs[name].append((float(np.percentile(t, 50)), float(np.percentile(t, 99))))
    return {
        k: (float(np.median([r[0] for r in v])), float(np.median([r[1] for r in v]))) for k, v in runs.items()
    }


def trees(args: argparse.Namespace, out: Path) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    import onnxruntime as ort
    import xgboost as xgb
    from sklearn.ensemble import GradientBoostingClassifier

    from fourfold import compile_model, load_package
    from fourfold.demo.run import run_demo
    from fourfold.edge import CascadeModel, EdgeModel
    from fourfold.embedded.export import export_bundle
    from fourfold.model.predictor import Predictor

    run_demo(events=args.events, out_dir=out)
    pkg = load_package(out / "fraud-model")
    notes: dict[str, str] = {}
    try:
        compile_model(pkg.path, c=True)  # the compiled trees as a package runtime (the patterns' pick)
        pkg = load_package(pkg.path)
        notes["serving runtime"] = pkg.serving_runtime()
    except TypeError:  # a checkout without the C runtime
        pass
    names = list(pkg.signature.feature_names)
    sample = pkg.sample()
    rows = np.column_stack(
        [np.asarray(sample[n].to_numpy(zero_copy_only=False), dtype=np.float64) for n in names]
    )
    row_map = {n: float(rows[0, j]) for j, n in enumerate(names)}
    row64 = rows[:1].copy()
    row32 = row64.astype(np.float32)

    export_bundle(pkg.path, "onnx", out / "edge-onnx")
    edge = EdgeModel(out / "edge-onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        str(out / "edge-onnx" / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    booster = xgb.Booster(model_file=str(pkg.path / "artifacts" / "model.ubj"))
    booster.set_param({"nthread": 1})
    clf = xgb.XGBClassifier()
    clf.load_model(str(pkg.path / "artifacts" / "model.ubj"))
    clf.set_params(n_jobs=1)
    labels = (booster.inplace_predict(rows) > 0.5).astype(int)
    if labels.min() == labels.max():
        labels[: len(labels) // 2] = 1 - labels[0]
    filled = np.nan_to_num(rows)  # scikit-learn's GBDT takes no NaN; the timing is what it is compared on
    gbdt = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(filled, labels)
    filled_row = filled[:1].copy()
    cascade = CascadeModel(edge, None, low=1.0, high=1.0)  # every score below low: the local path
    cases: dict[str, Callable[[], Any]] = {
        "fourfold EdgeModel.predict_one (onnx)": lambda: edge.predict_one(row_map),
        "raw onnxruntime session.run": lambda: sess.run(["probabilities"], {"input": row32}),
        "fourfold cascade, local path": lambda: cascade.predict_one(row_map),
        "xgboost inplace_predict": lambda: booster.inplace_predict(row64),
        "xgboost predict_proba": lambda: clf.predict_proba(row64),
        "sklearn GBDT predict_proba (100x3)": lambda: gbdt.predict_proba(filled_row),
        "fourfold Predictor.predict_one (native)": lambda: Predictor(pkg, runtime="native").predict_one,
    }
    native = Predictor(pkg, runtime="native")
    cases["fourfold Predictor.predict_one (native)"] = lambda: native.predict_one(row_map)
    try:
        export_bundle(pkg.path, "c", out / "edge-c")
        cedge = EdgeModel(out / "edge-c")
        runner = cedge.runner
        runner.row[...] = row64.astype(runner.input_dtype)
        cases["fourfold EdgeModel.predict_one (c)"] = lambda: cedge.predict_one(row_map)
        cases["raw compiled trees score_row"] = runner.score_row
        np.testing.assert_allclose(cedge.predict(rows)["score"], booster.inplace_predict(rows), atol=1e-5)
    except Exception as exc:
        notes["compiled trees"] = f"not measured: {type(exc).__name__}: {exc}"
    np.testing.assert_allclose(edge.predict(rows)["score"], booster.inplace_predict(rows), atol=1e-5)
    return measure(cases, args.repeat, args.rounds), notes


def mlp(args: argparse.Namespace, out: Path) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    import onnxruntime as ort
    import pyarrow as pa
    import torch

    from fourfold import save_model
    from fourfold.edge import EdgeModel
    from fourfold.embedded.export import export_bundle

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(30, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    ).eval()
    x = np.random.default_rng(0).standard_normal((256, 30))
    table = pa.table({f"f{i}": x[:, i] for i in range(30)})
    pkg = save_model(net, out / "mlp", name="mlp", sample=table, task="binary")
    row_map = {f"f{i}": float(x[0, i]) for i in range(30)}
    row32 = x[:1].astype(np.float32)
    notes: dict[str, str] = {}
    cases: dict[str, Callable[[], Any]] = {}
    for fmt in ("onnx", "tflite", "executorch"):
        try:
            export_bundle(pkg.path, fmt, out / f"mlp-{fmt}")
            model = EdgeModel(out / f"mlp-{fmt}")
            cases[f"fourfold EdgeModel.predict_one ({fmt})"] = lambda m=model: m.predict_one(row_map)
            runner = model.runner
            runner.row[...] = row32
            cases[f"raw {fmt} runner score_row"] = runner.score_row
        except Exception as exc:
            notes[fmt] = f"not measured: {type(exc).__name__}: {exc}"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if (out / "mlp-onnx" / "model.onnx").exists():
        sess = ort.InferenceSession(
            str(out / "mlp-onnx" / "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        name = sess.get_inputs()[0].name
        cases["raw onnxruntime session.run"] = lambda: sess.run(None, {name: row32})
    xt = torch.from_numpy(row32)

    def eager() -> Any:
        with torch.inference_mode():
            return torch.sigmoid(net(xt))

    cases["torch eager (inference_mode)"] = eager
    return measure(cases, args.repeat, args.rounds), notes


def table(title: str, results: dict[str, tuple[float, float]], base: str, notes: dict[str, str]) -> None:
    print(f"\n{title}")
    print(f"{'case':<42} {'p50 us':>9} {'p99 us':>9} {'p50 / ' + base:>24}")
    ref = results.get(base, (float("nan"), 0))[0]
    for name, (p50, p99) in results.items():
        print(f"{name:<42} {p50:>9.2f} {p99:>9.2f} {p50 / ref:>24.2f}")
    for k, v in notes.items():
        print(f"  {k}: {v}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("FOURFOLD_HOME", tempfile.mkdtemp(prefix="ff-bench-"))
    out = Path(tempfile.mkdtemp(prefix="ff-bench-embedded-"))
    tree_results, tree_notes = trees(args, out)
    mlp_results, mlp_notes = mlp(args, out)
    print(f"\none thread, {os.cpu_count()} cores; {args.rounds} interleaved rounds of {args.repeat} calls")
    table("demo fraud model (XGBoost)", tree_results, "raw onnxruntime session.run", tree_notes)
    edge = tree_results["fourfold EdgeModel.predict_one (onnx)"][0]
    raw = tree_results["raw onnxruntime session.run"][0]
    xgb_p50 = tree_results["xgboost inplace_predict"][0]
    print(f"floors: predict_one/session.run {edge / raw:.2f} (<= 1.2), predict_one {edge:.1f} us (< 50), "
          f"xgboost/predict_one {xgb_p50 / edge:.1f}x (>= 10)", end="")  # fmt: skip
    c = tree_results.get("fourfold EdgeModel.predict_one (c)")
    print(f", compiled trees predict_one {c[0]:.1f} us (<= 10)" if c else "")
    table("MLP 30->64->64->1", mlp_results, "raw onnxruntime session.run", mlp_notes)


if __name__ == "__main__":
    main()
