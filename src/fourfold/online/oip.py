"""The Open Inference Protocol (KServe V2) REST codec: tensors in, tensors out, for a tabular model.

Accepted inputs (what KServe, Triton and MLServer clients send for tabular models):

* one ``[N, F]`` tensor (any name) whose columns are the signature's features in order, or
* one ``[N]`` (or ``[N, 1]``) tensor per feature, named by the feature (MLServer's ``pd`` convention).

``data`` may be nested or flat (row-major); its element count must equal the product of ``shape``.
Outputs: ``score`` (FP64) and ``label`` (INT64) for a binary classifier, ``probabilities`` / ``value``
for the other tasks; a request's ``outputs`` list selects among them.

    >>> # decode_infer({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}, sig)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fourfold.errors import RequestError
from fourfold.model.signature import Signature

__all__ = ["InferRequest", "OIPError", "decode_infer", "encode_infer", "model_metadata"]

_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_OUT_TYPES = {"f": "FP64", "i": "INT64", "u": "UINT64", "b": "BOOL"}


class OIPError(RequestError):
    """A request that does not follow the Open Inference Protocol (HTTP 400, ``{"error": ...}``)."""


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    batch: np.ndarray | dict[str, np.ndarray]  # a matrix in signature order, or columns by name
    rows: int
    outputs: tuple[str, ...] | None


def _tensor(t: Any, i: int) -> tuple[str, np.ndarray]:
    if not isinstance(t, Mapping):
        raise OIPError(f"inputs[{i}] must be an object with name, shape, datatype and data")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in t]
    if missing:
        raise OIPError(f"inputs[{i}] is missing {', '.join(missing)}")
    name, shape, datatype, data = t["name"], t["shape"], t["datatype"], t["data"]
    if not isinstance(name, str):
        raise OIPError(f"inputs[{i}].name must be a string")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise OIPError(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r:.80}")
    if len(shape) > 32 or math.prod(d for d in shape if d) > 2**40:  # numpy cannot even shape it
        raise OIPError(f"input {name!r}: shape {shape!r:.80} is beyond any tensor this server takes")
    if not isinstance(datatype, str):
        raise OIPError(f"input {name!r}: datatype must be a string such as FP64, got {datatype!r:.80}")
    if datatype == "BYTES":
        raise OIPError(f"input {name!r}: datatype BYTES is not accepted; the model's features are numbers")
    if datatype not in _DTYPES:
        raise OIPError(f"input {name!r}: unknown datatype {datatype!r:.40}; use one of {', '.join(_DTYPES)}")
    flat = _flatten(data, name)
    expected = math.prod(shape)
    if len(flat) != expected:
        raise OIPError(f"input {name!r}: shape {shape} needs {expected} values, data has {len(flat)}")
    return name, _typed(flat, datatype, name).reshape(shape)


def _flatten(data: Any, name: str) -> list[Any]:
    """Row-major elements of (nested) ``data``; a scalar is one element."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _typed(flat: list[Any], datatype: str, name: str) -> np.ndarray:
    """The elements as an array of ``datatype``, each element checked for what the datatype can hold:
    BOOL takes JSON booleans only, the integer types whole numbers in range (never a boolean), FP16/32/64
    numbers or null (a missing value)."""
    dtype = np.dtype(_DTYPES[datatype])
    if datatype == "BOOL":
        bad = next((v for v in flat if type(v) is not bool), _NONE)
        if bad is not _NONE:
            raise OIPError(f"input {name!r}: BOOL data must be true or false, got {bad!r:.40}")
        return np.array(flat, dtype=bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        bad = next(
            (v for v in flat if type(v) is not int or not info.min <= v <= info.max),  # JSON 1.0 is a float
            _NONE,
        )
        if bad is not _NONE:
            raise OIPError(
                f"input {name!r}: {datatype} data must be whole numbers in [{info.min}, {info.max}], "
                f"got {bad!r:.40}"
            )
        return np.array(flat, dtype=dtype)
    bad = next((v for v in flat if v is not None and type(v) not in (int, float)), _NONE)
    if bad is not _NONE:
        raise OIPError(f"input {name!r}: {datatype} data must be numbers (or null), got {bad!r:.40}")
    with np.errstate(over="ignore"):  # beyond FP16/FP32: inf, refused by the model's check with a reason
        return np.array([math.nan if v is None else v for v in flat], dtype=np.float64).astype(dtype)


_NONE = object()


def decode_infer(body: Any, signature: Signature) -> InferRequest:
    """Read an inference request into a batch for the predictor, or raise :class:`OIPError`."""
    if not isinstance(body, Mapping):
        raise OIPError("the request body must be a JSON object with 'inputs'")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OIPError("'inputs' must be a non-empty list of tensors")
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    names = signature.feature_names
    outputs = body.get("outputs")
    wanted: tuple[str, ...] | None = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise OIPError("'outputs' must be a list of objects with a 'name' string")
        wanted = tuple(str(o["name"]) for o in outputs)
        known = [o.name for o in signature.outputs]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise OIPError(
                f"unknown output(s) {', '.join(map(repr, unknown))}; the model has {', '.join(known)}"
            )
    rid = body.get("id")
    if rid is not None and not isinstance(rid, str):
        raise OIPError(f"'id' must be a string, got {type(rid).__name__}")
    if len(tensors) == 1 and tensors[0][1].ndim == 2 and tensors[0][0] not in names:
        name, arr = tensors[0]
        if arr.shape[1] != len(names):
            raise OIPError(
                f"input {name!r} has {arr.shape[1]} columns; the model takes {len(names)}: {', '.join(names)}"
            )
        return InferRequest(rid, arr, arr.shape[0], wanted)
    columns: dict[str, np.ndarray] = {}
    rows: int | None = None
    unknown_inputs = [n for n, _ in tensors if n not in names]
    if unknown_inputs:
        raise OIPError(
            f"unknown input(s) {', '.join(map(repr, unknown_inputs))}; send one [N, {len(names)}] tensor, or "
            f"one [N] tensor per feature named: {', '.join(names)}"
        )
    for name, arr in tensors:
        if name in columns:
            raise OIPError(f"input {name!r} is given twice")
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise OIPError(
                f"input {name!r}: a per-feature input must have shape [N] or [N, 1], got {list(arr.shape)}"
            )
        if rows is not None and len(arr) != rows:
            raise OIPError(f"input {name!r} has {len(arr)} rows, the other inputs have {rows}")
        rows = len(arr)
        columns[name] = arr
    return InferRequest(rid, columns, rows or 0, wanted)


def encode_infer(
    model: str, version: str | None, out: Mapping[str, np.ndarray], request: InferRequest
) -> dict[str, Any]:
    names = request.outputs or tuple(out)
    outputs = []
    for name in names:
        arr = np.asarray(out[name])
        outputs.append(
            {
                "name": name,
                "shape": list(arr.shape),
                "datatype": _OUT_TYPES.get(arr.dtype.kind, "FP64"),
                "data": arr.ravel().tolist(),
            }
        )
    response: dict[str, Any] = {"model_name": model, "outputs": outputs}
    if version is not None:
        response["model_version"] = version
    if request.id is not None:
        response["id"] = request.id
    return response


def model_metadata(name: str, version: str | None, flavor: str, signature: Signature) -> dict[str, Any]:
    """Per-feature ``[-1]`` inputs (the tabular convention); a single ``[-1, F]`` tensor is accepted too."""
    dt = {"float64": "FP64", "float32": "FP32", "int64": "INT64", "int32": "INT32", "int16": "INT16",
          "int8": "INT8", "bool": "BOOL"}  # fmt: skip
    meta: dict[str, Any] = {
        "name": name,
        "platform": f"fourfold-{flavor}",
        "inputs": [{"name": f.name, "datatype": dt[f.dtype], "shape": [-1]} for f in signature.inputs],
        "outputs": [
            {
                "name": o.name,
                "datatype": "INT64" if o.dtype.startswith("int") else "FP64",
                "shape": [-1, *o.shape],
            }
            for o in signature.outputs
        ],
    }
    if version is not None:
        meta["versions"] = [version]
    return meta
