"""PyTorch modules (the ``[torch]`` extra), saved as an exported program or as a state dict.

* ``torch_format="exported"`` (default): ``torch.export`` of the module with a dynamic batch dimension;
  loading needs no code of yours.
* ``torch_format="state_dict"``: the weights, loaded with ``weights_only=True`` into
  ``module_class`` (``"package.module:Class"``) built with ``init_kwargs``.

The module maps a float32 ``[rows, features]`` tensor to logits (``torch_output="logit"``, default) or
probabilities; fourfold applies the sigmoid / softmax itself, the same way in the ONNX export.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fourfold.model.flavors.base import SavedModel, require
from fourfold.model.signature import Task

_EXTRA = "torch"


def _head(module: Any, task: Task, output: str) -> Any:
    torch = require("torch", _EXTRA, "a PyTorch model")

    class Head(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.body = module

        def forward(self, x: Any) -> Any:
            y = self.body(x)
            if task == "binary":
                y = y.reshape(-1)
                return torch.sigmoid(y) if output == "logit" else y
            if task == "multiclass":
                return torch.softmax(y, dim=-1) if output == "logit" else y
            return y.reshape(-1)

    head = Head()
    head.training = False  # not .eval(): an exported program's module refuses train()/eval()
    return head


class TorchModel:
    input_dtype: type[np.floating[Any]] = np.float32

    def __init__(self, head: Any) -> None:
        self.head = head
        self._torch = require("torch", _EXTRA, "a PyTorch model")

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            y = self.head(self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return np.asarray(y.numpy(), dtype=np.float64)


class TorchFlavor:
    name = "torch"

    def matches(self, model: Any) -> bool:
        torch = importlib.sys.modules.get("torch")  # type: ignore[attr-defined]
        return torch is not None and isinstance(model, torch.nn.Module)

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> SavedModel:
        torch = require("torch", _EXTRA, "saving a PyTorch model")
        task: Task = options.get("task", "binary")
        output = options.get("torch_output", "logit")
        if output not in ("logit", "probability"):
            raise ValueError(f"torch_output must be 'logit' or 'probability', got {output!r}")
        n_features = options.get("n_features")
        if not n_features:
            raise ValueError("saving a PyTorch model needs a signature or a sample to know its input width")
        fmt = options.get("torch_format", "exported")
        kept = {"task": task, "torch_output": output, "torch_format": fmt}
        model = model.eval()
        if fmt == "exported":
            batch = torch.export.Dim("batch", min=1)
            example = (torch.zeros(2, n_features, dtype=torch.float32),)
            program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
            torch.export.save(program, directory / "model.pt2")
            files = ["model.pt2"]
        elif fmt == "state_dict":
            module_class = (
                options.get("module_class") or f"{type(model).__module__}:{type(model).__qualname__}"
            )
            kept |= {"module_class": module_class, "init_kwargs": dict(options.get("init_kwargs", {}))}
            torch.save(model.state_dict(), directory / "model.pt")
            files = ["model.pt"]
        else:
            raise ValueError(f"torch_format must be 'exported' or 'state_dict', got {fmt!r}")
        classes = tuple(options.get("classes", (0, 1) if task == "binary" else ()))
        return SavedModel(files, task, classes, n_features, {"torch": torch.__version__}, kept)

    def _module(self, directory: Path, options: dict[str, Any]) -> Any:
        torch = require("torch", _EXTRA, "loading a PyTorch model")
        if options.get("torch_format", "exported") == "exported":
            return torch.export.load(directory / "model.pt2").module()
        module_path, _, cls_name = str(options["module_class"]).partition(":")
        cls = getattr(importlib.import_module(module_path), cls_name)
        module = cls(**options.get("init_kwargs", {}))
        module.load_state_dict(torch.load(directory / "model.pt", weights_only=True, map_location="cpu"))
        return module.eval()

    def load(self, directory: Path, options: dict[str, Any], *, trusted: bool) -> TorchModel:
        module = self._module(directory, options)
        return TorchModel(_head(module, options.get("task", "binary"), options.get("torch_output", "logit")))

    def to_onnx(
        self, directory: Path, options: dict[str, Any], n_features: int, *, trusted: bool
    ) -> tuple[Any, dict[str, str]]:
        torch = require("torch", _EXTRA, "converting a PyTorch model to ONNX")
        onnx = require("onnx", "onnx", "converting a PyTorch model to ONNX")
        require("onnxscript", _EXTRA, "converting a PyTorch model to ONNX")
        head = _head(self._module(directory, options), options.get("task", "binary"), options["torch_output"])
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # torch's exporter trips over its own deprecations (pytree LeafSpec); nothing a user can act on.
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                head,
                (torch.zeros(2, n_features, dtype=torch.float32),),
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                opset_version=18,
                dynamo=True,
                verbose=False,
            )
        proto = onnx.load_from_string(program.model_proto.SerializeToString())
        return proto, {"converter": "torch.onnx (dynamo)", "converter_version": str(torch.__version__)}
