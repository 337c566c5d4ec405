"""One row through the 30 -> 64 -> 64 -> 1 MLP of issue 11 on each edge runtime: p50 / p99 microseconds.

    PYTHONPATH=src .venv/bin/python bench/embedded/mlp.py [--repeat 20000]

The package is a PyTorch MLP (ReLU, binary: fourfold's head applies the sigmoid). Each runtime gets one
float32 row already in place and one thread where it has a setting for it:

* torch eager under ``inference_mode`` - the original ``nn.Sequential`` (+ sigmoid), and the package's
  native head (the module ``torch.export.load`` gives back, wrapped in fourfold's head);
* ONNX Runtime - ``fourfold compile``'s ``onnx/model.onnx`` (torch.onnx dynamo), one intra-op thread,
  ``session.run`` and the C++ ``_sess.run`` it wraps (the call the edge OnnxRunner makes);
* LiteRT - ``--format tflite`` through ``TFLiteRunner.score_row``;
* ExecuTorch - ``--format executorch`` (XNNPACK) through ``PteRunner.score_row``, ExecuTorch's default
  thread pool (``portable_lib._unsafe_reset_threadpool(1)`` after a method was loaded hung the next
  ``execute`` here: not used).

A measurement, not a test: the machine is shared; the figures are the best of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import timed


def build(root: Path) -> tuple[Any, Any]:
    import torch

    from fourfold import save_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(30, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    ).eval()
    x = np.random.default_rng(0).standard_normal((256, 30)).astype(np.float32)
    table = pa.table({f"f{i}": x[:, i] for i in range(30)})
    return net, save_model(net, root / "pkg", name="mlp", sample=table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from fourfold.edge.runners import load_runner
    from fourfold.embedded.targets import get_exporter
    from fourfold.model.compile import compile_package
    from fourfold.model.package import load_package

    root = Path(tempfile.mkdtemp(prefix="bench-mlp-"))
    net, pkg = build(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compile_package(pkg)
    pkg = load_package(pkg.path)
    row = np.random.default_rng(1).standard_normal((1, 30)).astype(np.float32)
    reference = float(pkg.load_native().predict_raw(row)[0])

    torch.set_num_threads(1)
    head = pkg.load_native().head  # type: ignore[attr-defined]
    row_t = torch.from_numpy(row)

    def eager() -> float:
        with torch.inference_mode():
            return float(head(row_t)[0])

    def module() -> float:
        with torch.inference_mode():
            return float(torch.sigmoid(net(row_t))[0, 0])

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(pkg.path / "onnx" / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    name, out = session.get_inputs()[0].name, [session.get_outputs()[0].name]
    feed = {name: row}
    raw_run = session._sess.run

    runners = {}
    for fmt in ("tflite", "executorch"):
        target = root / fmt
        target.mkdir()
        exported = get_exporter(fmt)(pkg, target, opset=None, quantize=None)
        runner = load_runner(target, exported.spec, "binary")
        runner.row[:] = row
        runners[fmt] = runner

    cases: list[tuple[str, Callable[[], Any], Callable[[], float]]] = [
        ("torch eager, the nn.Sequential + sigmoid", module, module),
        ("torch eager, the package's loaded program", eager, eager),
        (
            "onnxruntime session.run",
            lambda: session.run(out, feed),
            lambda: float(session.run(out, feed)[0][0]),
        ),
        (
            "onnxruntime _sess.run",
            lambda: raw_run(out, feed, None),
            lambda: float(raw_run(out, feed, None)[0][0]),
        ),
        ("LiteRT TFLiteRunner.score_row", runners["tflite"].score_row, runners["tflite"].score_row),
        ("ExecuTorch PteRunner.score_row", runners["executorch"].score_row, runners["executorch"].score_row),
    ]
    results = []
    for label, fn, check in cases:
        assert abs(check() - reference) < 1e-5, label
        results.append((label, _best(fn, args.repeat, args.rounds)))

    print(f"one row, 30->64->64->1 MLP, best of {args.rounds} x {args.repeat} calls (µs)")
    print(f"{'runtime':40s} {'p50':>8s} {'p99':>8s}")
    for label, (p50, p99) in results:
        print(f"{label:40s} {p50:8.1f} {p99:8.1f}")


def _best(fn: Callable[[], Any], repeat: int, rounds: int) -> tuple[float, float]:
    runs = [timed(fn, repeat, warmup=500) for _ in range(rounds)]
    return min(float(np.percentile(r, 50)) for r in runs), min(float(np.percentile(r, 99)) for r in runs)


if __name__ == "__main__":
    main()
