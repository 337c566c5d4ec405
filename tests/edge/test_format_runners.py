"""The LiteRT and ExecuTorch runners held to the runner contract (edge/runners.py), and vendorable: they
load and score from a copy of the edge package with no fourfold importable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fourfold.edge
from fourfold.edge.runners import load_runner
from fourfold.embedded.targets import get_exporter
from mlps import rows, save_torch, torch_mlp

FORMATS = ["tflite", "executorch"]


@pytest.fixture(scope="module", params=[(f, t) for f in FORMATS for t in ("binary", "multiclass")], ids=str)
def bundle(request: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str, Any]:
    fmt, task = request.param
    root = tmp_path_factory.mktemp(f"{fmt}-{task}")
    pkg = save_torch(torch_mlp(task), root / "pkg", task)
    (root / "out").mkdir()
    exported = get_exporter(fmt)(pkg, root / "out", opset=None, quantize=None)
    return root / "out", exported.spec, task, pkg


def test_contract(bundle: tuple[Path, dict[str, Any], str, Any]) -> None:
    out, spec, task, _ = bundle
    runner = load_runner(out, spec, task)
    assert runner.input_dtype == np.float32
    assert runner.row.shape == (1, 6)
    assert runner.row.dtype == np.float32
    x = rows(2, 20).astype(np.float32)
    raw = runner.predict_raw(x)
    assert raw.dtype == np.float64
    assert raw.shape == ((20, 3) if task == "multiclass" else (20,))
    empty = runner.predict_raw(x[:0])
    assert empty.shape == ((0, 3) if task == "multiclass" else (0,))
    buffer = runner.row
    for i in range(5):
        runner.row[0] = x[i]
        one = runner.score_row()
        if task == "multiclass":
            assert isinstance(one, np.ndarray)
            assert one.shape == (3,)
        else:
            assert isinstance(one, float)
        np.testing.assert_array_equal(np.asarray(one), raw[i])
    assert runner.row is buffer
    if task == "multiclass":  # a returned row is the caller's: the next call does not change it
        runner.row[0] = x[0]
        first = runner.score_row()
        runner.row[0] = x[1]
        runner.score_row()
        np.testing.assert_array_equal(first, raw[0])


def test_vendored_copy_needs_no_fourfold(
    bundle: tuple[Path, dict[str, Any], str, Any], tmp_path: Path
) -> None:
    out, spec, task, _ = bundle
    shutil.copytree(Path(fourfold.edge.__file__).parent, tmp_path / "vendor" / "fourfold_edge")
    x = rows(4, 8).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = f"""
import sys, json, builtins
real = builtins.__import__
def guarded(name, *a, **k):
    if name == "fourfold" or name.startswith("fourfold."):
        raise ImportError("fourfold is not importable in a client app")
    return real(name, *a, **k)
builtins.__import__ = guarded
sys.path.insert(0, {str(tmp_path / "vendor")!r})
import numpy as np
from pathlib import Path
from fourfold_edge.runners import load_runner
runner = load_runner(Path({str(out)!r}), json.loads({json.dumps(json.dumps(spec))}), {task!r})
np.save({str(tmp_path / "y.npy")!r}, runner.predict_raw(np.load({str(tmp_path / "x.npy")!r})))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = load_runner(out, spec, task).predict_raw(x)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)
