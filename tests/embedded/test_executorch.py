"""--format executorch: PyTorch packages as ExecuTorch programs (XNNPACK), run by the edge runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fourfold.edge.runners import load_runner
from fourfold.embedded import executorch_target
from fourfold.embedded.targets import Exported, get_exporter
from fourfold.errors import InvalidOptionError, UnsupportedModelError
from fourfold.model.package import ModelPackage
from mlps import assert_agrees, rows, save_sklearn, save_torch, sklearn_mlp, torch_mlp


def _export(pkg: ModelPackage, out: Path, quantize: str | None = None) -> Exported:
    out.mkdir()
    return get_exporter("executorch")(pkg, out, opset=None, quantize=quantize)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_torch_mlp_matches_native(tmp_path: Path, task: str) -> None:
    pkg = save_torch(torch_mlp(task), tmp_path / "pkg", task)
    exported = _export(pkg, tmp_path / "out")
    assert exported.files == ("model.pte",)
    assert exported.spec["backend"] == "xnnpack"
    assert exported.info["delegated_calls"] >= 1
    assert_agrees(pkg, exported, tmp_path / "out")


class _Skip(torch.nn.Module):
    """Not an MLP: ExecuTorch takes any exportable module, not only chains of layers."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(6, 6)
        self.b = torch.nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)) + x * x.abs().clamp(max=2.0))


def test_any_exportable_module_and_more_rows_than_one_block(tmp_path: Path, monkeypatch: Any) -> None:
    torch.manual_seed(0)
    pkg = save_torch(_Skip().eval(), tmp_path / "pkg", "binary")
    monkeypatch.setattr(executorch_target, "MAX_BATCH", 64)
    exported = _export(pkg, tmp_path / "out")
    assert exported.spec["max_batch"] == 64
    assert_agrees(pkg, exported, tmp_path / "out")  # 300 rows: five blocks of up to 64
    runner = load_runner(tmp_path / "out", exported.spec, "binary")
    assert runner.predict_raw(np.empty((0, 6), dtype=np.float32)).shape == (0,)


def test_portable_fallback_when_xnnpack_lowering_fails(tmp_path: Path, monkeypatch: Any) -> None:
    from executorch.backends.xnnpack.partition import xnnpack_partitioner

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no XNNPACK here")

    monkeypatch.setattr(xnnpack_partitioner, "XnnpackPartitioner", broken)
    pkg = save_torch(torch_mlp("multiclass"), tmp_path / "pkg", "multiclass")
    exported = _export(pkg, tmp_path / "out")
    assert exported.spec["backend"] == "portable"
    assert "no XNNPACK here" in exported.info["fallback"]
    assert_agrees(pkg, exported, tmp_path / "out")


def test_non_torch_models_and_quantize_are_refused(tmp_path: Path) -> None:
    pkg = save_sklearn(sklearn_mlp("binary"), tmp_path / "skl")
    with pytest.raises(UnsupportedModelError, match="--format executorch takes PyTorch models"):
        _export(pkg, tmp_path / "out")
    pkg = save_torch(torch_mlp("binary"), tmp_path / "t", "binary")
    with pytest.raises(
        InvalidOptionError, match="quantize='dynamic' is not supported for --format executorch"
    ):
        _export(pkg, tmp_path / "out2", quantize="dynamic")


def test_score_row_reads_the_runner_buffer(tmp_path: Path) -> None:
    pkg = save_torch(torch_mlp("regression"), tmp_path / "pkg", "regression")
    exported = _export(pkg, tmp_path / "out")
    runner = load_runner(tmp_path / "out", exported.spec, "regression")
    x = rows(5, 3).astype(np.float32)
    native = pkg.load_native().predict_raw(x)
    for i in range(3):
        runner.row[0] = x[i]
        assert runner.score_row() == pytest.approx(native[i], abs=1e-5)
