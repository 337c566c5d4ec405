"""Tiny MLP packages of each task (PyTorch, scikit-learn) for the edge export targets, and the agreement
check every target's test holds its runner to (``tests/embedded/``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fourfold.edge.runners import load_runner
from fourfold.embedded.targets import Exported
from fourfold.model.package import ModelPackage, save_model

N = 6
ROWS = 300


def rows(seed: int = 1, n: int = ROWS) -> np.ndarray:
    """float32-representable rows (held as float64, as the core hands them to a native model)."""
    x = np.random.default_rng(seed).standard_normal((n, N)) * 2
    return x.astype(np.float32).astype(np.float64)


def _table(x: np.ndarray) -> pa.Table:
    return pa.table({f"x{i}": x[:, i] for i in range(N)})


def _labels(x: np.ndarray, task: str) -> np.ndarray:
    if task == "multiclass":
        return (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    if task == "binary":
        return (x[:, 0] + x[:, 1] * x[:, 2] > 0.2).astype(np.int64)
    return x[:, 0] * 2 - np.tanh(x[:, 1]) + 0.3


def torch_mlp(task: str, *, act: str = "relu") -> Any:
    import torch

    torch.manual_seed(0)
    width = 3 if task == "multiclass" else 1
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
    net = torch.nn.Sequential(
        torch.nn.Linear(N, 16), acts[act](), torch.nn.Dropout(0.1),
        torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Identity(), torch.nn.Linear(8, width),
    )  # fmt: skip
    x = rows(0, 400)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(_labels(x, task))
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(40):
        opt.zero_grad()
        out = net(xt)
        if task == "multiclass":
            loss = torch.nn.functional.cross_entropy(out, yt)
        elif task == "binary":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.reshape(-1), yt.float())
        else:
            loss = torch.nn.functional.mse_loss(out.reshape(-1), yt.float())
        loss.backward()
        opt.step()
    return net.eval()


def save_torch(model: Any, path: Path, task: str, **options: Any) -> ModelPackage:
    x = rows(0, 64)
    classes = {"classes": (0, 1, 2)} if task == "multiclass" else {}
    return save_model(model, path, name="mlp", sample=_table(x), task=task, **classes, **options)


def sklearn_mlp(task: str) -> Any:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    x = rows(0, 400)
    cls = MLPRegressor if task == "regression" else MLPClassifier
    model = cls(hidden_layer_sizes=(12, 8), activation="tanh", max_iter=100, random_state=0)
    return fit_quietly(model, x, _labels(x, task))


def fit_quietly(model: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """A tiny MLP fitted for a few epochs: not converging is the point (speed), not a problem."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def save_sklearn(model: Any, path: Path) -> ModelPackage:
    return save_model(model, path, name="mlp", sample=_table(rows(0, 64)))


def assert_agrees(pkg: ModelPackage, exported: Exported, out: Path) -> np.ndarray:
    """The exported file, run by its edge runner, gives the native model's raw output: max |diff| < 1e-5,
    no label flips, and ``score_row`` of a row equals ``predict_raw`` of that row. Returns the diffs."""
    task = pkg.signature.task
    runner = load_runner(out, exported.spec, task)
    assert runner.input_dtype == np.float32
    x = rows()
    native = pkg.load_native().predict_raw(x)
    edge = runner.predict_raw(x.astype(np.float32))
    assert edge.dtype == np.float64
    assert edge.shape == native.shape
    diff = np.abs(edge - native)
    assert diff.max() < 1e-5, f"max |diff| {diff.max():.3g}"
    if task == "binary":
        assert np.array_equal(edge > 0.5, native > 0.5)
    elif task == "multiclass":
        assert np.array_equal(edge.argmax(axis=1), native.argmax(axis=1))
    for i in range(0, ROWS, 37):
        runner.row[0] = x[i]
        one = runner.score_row()
        np.testing.assert_array_equal(np.asarray(one, dtype=np.float64), runner.predict_raw(x[i : i + 1])[0])
    return diff
