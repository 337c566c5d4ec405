"""The ``tflite`` export target: an MLP written as a LiteRT (TensorFlow Lite) flatbuffer, no TensorFlow.

The graph is built with the flatbuffers schema module the ``ai-edge-litert`` wheel ships
(``schema_py_generated``): one ``FULLY_CONNECTED`` per layer (a ReLU right after it fused into it),
``TANH`` / ``LOGISTIC`` / ``RELU`` / ``SOFTMAX`` ops for the other activations and fourfold's head, float32
weights. The batch dimension is dynamic (shape ``[1, n]``, signature ``[-1, n]``): the runner resizes the
input for many rows. Which models are supported: :data:`fourfold.embedded.dense.SUPPORTED`.

    >>> # exported = export(load_package("./mlp"), Path("staging"), opset=None, quantize=None)
    >>> # exported.spec -> {"format": "tflite", "file": "model.tflite", "input_dtype": "float32", ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fourfold.embedded.dense import Dense, Step, dense_steps
from fourfold.embedded.targets import Exported
from fourfold.errors import InvalidOptionError
from fourfold.extras import require

if TYPE_CHECKING:
    from fourfold.model.package import ModelPackage

__all__ = ["FILE", "export", "tflite_bytes"]

FILE = "model.tflite"
_EXTRA = "litert"


def export(
    pkg: ModelPackage, out: Path, *, opset: int | None = None, quantize: str | None = None
) -> Exported:
    """Write ``model.tflite`` for ``pkg`` under ``out`` (``opset`` is ONNX's and is not used here)."""
    if quantize is not None:
        raise InvalidOptionError(
            f"quantize={quantize!r} is not supported for --format tflite (float32 weights only); "
            "leave it unset, or use --format onnx for dynamic quantization"
        )
    require("ai_edge_litert", _EXTRA, "exporting to LiteRT (.tflite)")
    import ai_edge_litert

    steps = dense_steps(pkg)
    payload = tflite_bytes(steps, len(pkg.signature.inputs))
    (out / FILE).write_bytes(payload)
    layers = [s for s in steps if isinstance(s, Dense)]
    spec = {
        "format": "tflite",
        "file": FILE,
        "input_dtype": "float32",
        "outputs": layers[-1].units,
        "batch": "dynamic",
    }
    info = {
        "converter": "fourfold (LiteRT flatbuffers schema)",
        "converter_version": getattr(ai_edge_litert, "__version__", "unknown"),
        "layers": [f"{s.weight.shape[1]}->{s.units}" if isinstance(s, Dense) else s for s in steps],
        "bytes": len(payload),
    }
    return Exported(spec, (FILE,), info)


def tflite_bytes(steps: list[Step], n_features: int) -> bytes:
    """The flatbuffer of a graph of dense steps over a ``[batch, n_features]`` float32 input."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    graph = _Graph(s)
    current = graph.tensor("input", n_features)
    inputs = [current]
    i = 0
    while i < len(steps):
        step = steps[i]
        if isinstance(step, Dense):
            fuse = i + 1 < len(steps) and steps[i + 1] == "relu"
            current = graph.fully_connected(current, step, relu=fuse)
            i += 2 if fuse else 1
            continue
        current = graph.activation(current, step)
        i += 1
    model = s.ModelT()
    model.version = 3
    model.description = "fourfold"
    model.operatorCodes = graph.codes
    model.buffers = graph.buffers
    sub = s.SubGraphT()
    sub.name = "main"
    sub.tensors = graph.tensors
    sub.inputs = inputs
    sub.outputs = [current]
    sub.operators = graph.operators
    model.subgraphs = [sub]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _Graph:
    """Tensors, constant buffers, operator codes and operators of one subgraph, in the order added."""

    def __init__(self, schema: Any) -> None:
        self.s = schema
        self.buffers: list[Any] = [schema.BufferT()]  # buffer 0: the empty buffer of every activation tensor
        self.tensors: list[Any] = []
        self.codes: list[Any] = []
        self.operators: list[Any] = []
        self._code_index: dict[int, int] = {}
        self._widths: list[int] = []

    def tensor(self, name: str, width: int) -> int:
        """A float32 ``[batch, width]`` activation tensor with a dynamic batch."""
        return self._add(name, [1, width], [-1, width], buffer=0, width=width)

    def constant(self, name: str, value: np.ndarray) -> int:
        buf = self.s.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(value, dtype=np.float32).tobytes(), dtype=np.uint8)
        self.buffers.append(buf)
        return self._add(name, list(value.shape), None, buffer=len(self.buffers) - 1, width=0)

    def fully_connected(self, x: int, layer: Dense, *, relu: bool) -> int:
        s = self.s
        n = len(self.operators)
        w = self.constant(f"dense{n}/weight", layer.weight)
        b = self.constant(f"dense{n}/bias", layer.bias)
        y = self.tensor(f"dense{n}", layer.units)
        opts = s.FullyConnectedOptionsT()
        opts.fusedActivationFunction = (
            s.ActivationFunctionType.RELU if relu else s.ActivationFunctionType.NONE
        )
        self._op(
            s.BuiltinOperator.FULLY_CONNECTED, [x, w, b], y, s.BuiltinOptions.FullyConnectedOptions, opts
        )
        return y

    def activation(self, x: int, name: str) -> int:
        s = self.s
        y = self.tensor(f"{name}{len(self.operators)}", self._widths[x])
        if name == "softmax":
            opts = s.SoftmaxOptionsT()
            opts.beta = 1.0
            self._op(s.BuiltinOperator.SOFTMAX, [x], y, s.BuiltinOptions.SoftmaxOptions, opts)
        else:
            ops = {
                "relu": s.BuiltinOperator.RELU,
                "tanh": s.BuiltinOperator.TANH,
                "sigmoid": s.BuiltinOperator.LOGISTIC,
            }
            code = ops[name]
            self._op(code, [x], y, s.BuiltinOptions.NONE, None)
        return y

    def _add(
        self, name: str, shape: list[int], signature: list[int] | None, *, buffer: int, width: int
    ) -> int:
        t = self.s.TensorT()
        t.name = name
        t.shape = shape
        t.shapeSignature = signature
        t.type = self.s.TensorType.FLOAT32
        t.buffer = buffer
        self.tensors.append(t)
        self._widths.append(width)
        return len(self.tensors) - 1

    def _op(self, code: int, inputs: list[int], output: int, options_type: int, options: Any) -> None:
        if code not in self._code_index:
            oc = self.s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)  # the int8 field of schema v3 readers
            oc.version = 1
            self._code_index[code] = len(self.codes)
            self.codes.append(oc)
        op = self.s.OperatorT()
        op.opcodeIndex = self._code_index[code]
        op.inputs = inputs
        op.outputs = [output]
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        self.operators.append(op)
