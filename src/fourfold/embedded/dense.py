"""A package's multilayer perceptron as plain dense steps, for the targets that write a graph themselves.

``dense_steps(pkg)`` reads the layers out of the model and returns the whole computation from the
input row to the raw output fourfold serves (probability of the positive class, class probabilities,
value), as a list of :data:`Step`\\ s:

* ``Dense(weight [out, in], bias [out])`` - float32;
* an activation name: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"softmax"`` (the last over the classes).

Supported, and nothing else (anything else raises :class:`~fourfold.errors.UnsupportedModelError` that
says so):

* PyTorch (flavor ``torch``): a module whose exported graph is one chain of ``Linear`` and ``ReLU`` /
  ``Tanh`` / ``Sigmoid`` (``Identity`` and eval-mode ``Dropout`` vanish), plus fourfold's head (sigmoid
  for binary, softmax for multiclass when the module gives logits);
* scikit-learn ``MLPClassifier`` / ``MLPRegressor``, alone or after ``StandardScaler`` steps in a
  Pipeline (folded into the first layer).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fourfold.errors import UnsupportedModelError

if TYPE_CHECKING:
    from fourfold.model.package import ModelPackage

__all__ = ["SUPPORTED", "Activation", "Dense", "Step", "dense_steps"]

SUPPORTED = (
    "a PyTorch MLP (one chain of Linear and ReLU / Tanh / Sigmoid / Identity / Dropout) or a scikit-learn "
    "MLPClassifier / MLPRegressor (optionally after StandardScaler in a Pipeline)"
)

Activation = Literal["relu", "tanh", "sigmoid", "softmax"]


@dataclass(frozen=True)
class Dense:
    weight: np.ndarray  # [out, in] float32
    bias: np.ndarray  # [out] float32

    @property
    def units(self) -> int:
        return int(self.weight.shape[0])


Step = Dense | Activation


def dense_steps(pkg: ModelPackage) -> list[Step]:
    """The model of ``pkg`` as dense steps from input to raw output (see the module docstring)."""
    if pkg.flavor == "torch":
        steps = _torch_steps(pkg)
    elif pkg.flavor == "sklearn":
        steps = _sklearn_steps(pkg)
    else:
        raise UnsupportedModelError(f"{pkg.label} is a {pkg.flavor} model; supported: {SUPPORTED}")
    _check_widths(pkg, steps)
    return steps


def _check_widths(pkg: ModelPackage, steps: list[Step]) -> None:
    layers = [s for s in steps if isinstance(s, Dense)]
    if not layers:
        raise UnsupportedModelError(f"{pkg.label} has no Linear layer; supported: {SUPPORTED}")
    n_in = len(pkg.signature.inputs)
    if layers[0].weight.shape[1] != n_in:
        raise UnsupportedModelError(
            f"{pkg.label}: the first layer takes {layers[0].weight.shape[1]} inputs, the signature has {n_in}"
        )
    for a, b in itertools.pairwise(layers):
        if b.weight.shape[1] != a.units:
            raise UnsupportedModelError(
                f"{pkg.label}: a layer of {a.units} units feeds one of {b.weight.shape[1]}"
            )
    task = pkg.signature.task
    width = layers[-1].units
    if task in ("binary", "regression") and width != 1:
        raise UnsupportedModelError(
            f"{pkg.label}: a {task} model must end in 1 output unit, this one has {width}"
        )
    if task == "multiclass" and width < 2:
        raise UnsupportedModelError(f"{pkg.label}: a multiclass model must end in one unit per class")


def _dense(weight: Any, bias: Any) -> Dense:
    w = np.ascontiguousarray(np.asarray(weight, dtype=np.float64), dtype=np.float32)
    b = np.zeros(w.shape[0], dtype=np.float32) if bias is None else np.asarray(bias, dtype=np.float32)
    return Dense(w, np.ascontiguousarray(b.reshape(-1)))


# ---------------------------------------------------------------- PyTorch: walk the exported graph

_TORCH_ACTIVATIONS: dict[str, Activation] = {
    "aten.relu.default": "relu",
    "aten.tanh.default": "tanh",
    "aten.sigmoid.default": "sigmoid",
}
_TORCH_IDENTITY = ("aten.clone.default", "aten.alias.default", "aten.detach.default")


def _torch_steps(pkg: ModelPackage) -> list[Step]:
    import torch

    body = pkg.load_native().head.body  # type: ignore[attr-defined]
    example = (torch.zeros(2, len(pkg.signature.inputs), dtype=torch.float32),)
    with warnings.catch_warnings():
        # re-exporting a loaded exported program: torch warns about its own pytree internals.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        program = torch.export.export(
            body, example, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), strict=False
        )
    sig = program.graph_signature
    values = dict(program.state_dict) | dict(program.constants)
    params = {
        name: values[target]
        for name, target in (
            sig.inputs_to_parameters | sig.inputs_to_buffers | sig.inputs_to_lifted_tensor_constants
        ).items()
    }
    steps: list[Step] = []
    current: str | None = None
    for node in program.graph.nodes:
        if node.op == "placeholder":
            if node.name in sig.user_inputs:
                current = node.name
            continue
        if node.op == "output":
            (result,) = node.args[0]
            if str(result) != current:
                raise _torch_refusal(pkg, "its output is not the end of the layer chain")
            break
        target = str(node.target)
        args = node.args
        if not args or str(args[0]) != current:
            raise _torch_refusal(pkg, f"{target} does not continue the one chain from the input")
        if target == "aten.linear.default":
            bias = params[str(args[2])] if len(args) > 2 and args[2] is not None else None
            steps.append(
                _dense(params[str(args[1])].detach().numpy(), None if bias is None else bias.detach().numpy())
            )
        elif target in _TORCH_ACTIVATIONS:
            steps.append(_TORCH_ACTIVATIONS[target])
        elif target == "aten.dropout.default" and len(args) > 2 and args[2] is False:
            pass  # eval-mode dropout
        elif target not in _TORCH_IDENTITY:
            raise _torch_refusal(pkg, f"it uses {target}")
        current = node.name
    return steps + _torch_head(pkg)


def _torch_head(pkg: ModelPackage) -> list[Step]:
    if pkg.options.get("torch_output", "logit") != "logit":
        return []
    if pkg.signature.task == "binary":
        return ["sigmoid"]
    if pkg.signature.task == "multiclass":
        return ["softmax"]
    return []


def _torch_refusal(pkg: ModelPackage, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{pkg.label} is not a plain MLP: {why}; supported: {SUPPORTED}")


# ---------------------------------------------------------------- scikit-learn: coefs_ and intercepts_

_SKLEARN_ACTIVATIONS: dict[str, Activation | None] = {
    "identity": None,
    "relu": "relu",
    "tanh": "tanh",
    "logistic": "sigmoid",
    "softmax": "softmax",
}


def _sklearn_steps(pkg: ModelPackage) -> list[Step]:
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    model = pkg.load_native().model  # type: ignore[attr-defined]
    steps_in = [s for _, s in model.steps] if hasattr(model, "steps") else [model]
    *scalers, mlp = steps_in
    if not isinstance(mlp, MLPClassifier | MLPRegressor) or not all(
        isinstance(s, StandardScaler) for s in scalers
    ):
        names = " -> ".join(type(s).__name__ for s in steps_in)
        raise UnsupportedModelError(f"{pkg.label} is a scikit-learn {names}; supported: {SUPPORTED}")
    if mlp.n_outputs_ != 1 and not (pkg.signature.task == "multiclass" and mlp.out_activation_ == "softmax"):
        raise UnsupportedModelError(
            f"{pkg.label}: an MLP with {mlp.n_outputs_} outputs ({mlp.out_activation_}) is not a single "
            f"binary, multiclass or regression output; supported: {SUPPORTED}"
        )
    hidden = _SKLEARN_ACTIVATIONS[mlp.activation]
    out: list[Step] = []
    n_layers = len(mlp.coefs_)
    for i, (coef, intercept) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        w, b = np.asarray(coef, dtype=np.float64).T, np.asarray(intercept, dtype=np.float64)
        if i == 0:
            w, b = _fold_scalers(scalers, w, b)
        out.append(_dense(w, b))
        act = hidden if i < n_layers - 1 else _SKLEARN_ACTIVATIONS[mlp.out_activation_]
        if act is not None:
            out.append(act)
    return out


def _fold_scalers(scalers: list[Any], w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``W((x - mean) / scale) + b`` as one layer, last scaler first (computed in float64)."""
    for scaler in reversed(scalers):
        mean = scaler.mean_ if scaler.with_mean else 0.0
        scale = scaler.scale_ if scaler.with_std else 1.0
        w = w / scale
        b = b - w @ (np.zeros(w.shape[1]) + mean)
    return w, b
