"""--format tflite: MLPs written as a LiteRT flatbuffer, run by the edge runner, held to the native model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fourfold.edge.runners import load_runner
from fourfold.embedded.targets import get_exporter
from fourfold.errors import InvalidOptionError, UnsupportedModelError
from fourfold.model.package import ModelPackage
from mlps import assert_agrees, fit_quietly, rows, save_sklearn, save_torch, sklearn_mlp, torch_mlp


@pytest.fixture
def torch_binary(tmp_path: Path) -> ModelPackage:
    return save_torch(torch_mlp("binary"), tmp_path / "torch-binary", "binary")


def _export(pkg: ModelPackage, out: Path, **kw: object) -> object:
    out.mkdir()
    return get_exporter("tflite")(pkg, out, opset=None, quantize=kw.get("quantize"))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("act", ["relu", "sigmoid"])
def test_torch_mlp_matches_native(tmp_path: Path, task: str, act: str) -> None:
    pkg = save_torch(torch_mlp(task, act=act), tmp_path / "pkg", task)
    exported = _export(pkg, tmp_path / "out")
    assert exported.files == ("model.tflite",)
    assert exported.spec["format"] == "tflite"
    assert exported.spec["batch"] == "dynamic"
    assert_agrees(pkg, exported, tmp_path / "out")


def test_torch_state_dict_and_probability_output(tmp_path: Path) -> None:
    from nets import MLP

    torch.manual_seed(0)
    model = MLP(6).eval()
    pkg = save_torch(model, tmp_path / "sd", "binary", torch_format="state_dict", module_class="nets:MLP",
                     init_kwargs={"n_features": 6})  # fmt: skip
    assert_agrees(pkg, _export(pkg, tmp_path / "out"), tmp_path / "out")

    probs = torch.nn.Sequential(
        torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1), torch.nn.Sigmoid()
    )
    pkg = save_torch(probs.eval(), tmp_path / "p", "binary", torch_output="probability")
    exported = _export(pkg, tmp_path / "out-p")
    assert exported.info["layers"] == ["6->4", "relu", "4->1", "sigmoid"]  # no second sigmoid from the head
    assert_agrees(pkg, exported, tmp_path / "out-p")


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_sklearn_mlp_matches_native(tmp_path: Path, task: str) -> None:
    pkg = save_sklearn(sklearn_mlp(task), tmp_path / "pkg")
    assert pkg.signature.task == task
    assert_agrees(pkg, _export(pkg, tmp_path / "out"), tmp_path / "out")


def test_sklearn_scaler_pipeline_is_folded(tmp_path: Path) -> None:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = rows(0, 400) * 5 + 3
    y = (x[:, 0] > 3).astype(int)
    model = fit_quietly(
        make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=100, random_state=0)), x, y
    )
    pkg = save_sklearn(model, tmp_path / "pkg")
    exported = _export(pkg, tmp_path / "out")
    assert exported.info["layers"][0] == "6->8"
    assert_agrees(pkg, exported, tmp_path / "out")


def test_many_rows_in_blocks_and_score_row_reuses_its_buffer(
    tmp_path: Path, torch_binary: ModelPackage
) -> None:
    from fourfold.edge import tflite_runner

    exported = _export(torch_binary, tmp_path / "out")
    runner = load_runner(tmp_path / "out", exported.spec, "binary")
    x = rows(3, tflite_runner.BLOCK * 2 + 5).astype(np.float32)
    native = torch_binary.load_native().predict_raw(x)
    assert np.abs(runner.predict_raw(x) - native).max() < 1e-5
    assert runner.predict_raw(x[:0]).shape == (0,)
    buffer = runner.row
    runner.row[0] = x[7]
    assert runner.score_row() == pytest.approx(native[7], abs=1e-5)
    assert runner.row is buffer


class _Skip(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(6, 6)
        self.b = torch.nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)) + x)


def test_non_mlp_torch_module_is_refused_naming_what_is_supported(tmp_path: Path) -> None:
    pkg = save_torch(_Skip().eval(), tmp_path / "skip", "binary")
    with pytest.raises(UnsupportedModelError, match=r"not a plain MLP.*supported: a PyTorch MLP"):
        _export(pkg, tmp_path / "out")


def test_other_models_are_refused(tmp_path: Path) -> None:
    from sklearn.ensemble import GradientBoostingClassifier

    x = rows(0, 100)
    gbdt = GradientBoostingClassifier(n_estimators=3).fit(x, (x[:, 0] > 0).astype(int))
    pkg = save_sklearn(gbdt, tmp_path / "gbdt")
    with pytest.raises(
        UnsupportedModelError, match=r"GradientBoostingClassifier; supported: .*MLPClassifier"
    ):
        _export(pkg, tmp_path / "out")
    wide = torch.nn.Sequential(torch.nn.Linear(6, 2)).eval()  # binary needs one logit
    pkg = save_torch(wide, tmp_path / "wide", "binary")
    with pytest.raises(UnsupportedModelError, match="must end in 1 output unit"):
        _export(pkg, tmp_path / "out2")


def test_quantize_is_refused_with_the_option_named(tmp_path: Path, torch_binary: ModelPackage) -> None:
    with pytest.raises(InvalidOptionError, match="quantize='dynamic' is not supported for --format tflite"):
        _export(torch_binary, tmp_path / "out", quantize="dynamic")
