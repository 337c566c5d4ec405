"""The server's OpenAPI 3.1 document, derived from the served model's signature and feature set, so
clients (and the fuzz tests) see the exact request shapes.

    >>> # GET /openapi.json
"""

from __future__ import annotations

from typing import Any

from fourfold.model.expressions import json_schema
from fourfold.online.served import Served

__all__ = ["openapi"]

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def _tensor() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {
                "enum": [
                    "BOOL",
                    "UINT8",
                    "UINT16",
                    "UINT32",
                    "UINT64",
                    "INT8",
                    "INT16",
                    "INT32",
                    "INT64",
                    "FP16",
                    "FP32",
                    "FP64",
                ]
            },
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }


def openapi(served: Served, version: str, settings: Any = None) -> dict[str, Any]:
    """The document for ``served``: every field the caller sends, with the bounds the model's check
    enforces (:func:`fourfold.model.expressions.json_schema`), and nothing else (``/predict`` refuses
    unknown fields and the fields fourfold computes itself)."""
    sig = served.predictor.signature
    rules = served.predictor.rules
    assembly = served.assembly
    by_name = {f.name: f for f in sig.inputs}
    row: dict[str, Any] = {"type": "object", "properties": {}, "required": list(assembly.fields),
                           "additionalProperties": False}  # fmt: skip
    if assembly.key is not None:
        row["properties"][assembly.key] = {"type": "string", "minLength": 1}
    for name, field in assembly.request:
        row["properties"][field] = json_schema(rules, by_name[name])
    out_props: dict[str, Any] = {}
    for o in sig.outputs:
        item: dict[str, Any] = {"type": "integer" if o.dtype.startswith("int") else "number"}
        out_props[o.name] = {"type": "array", "items": item} if o.shape else item
    scored: dict[str, Any] = {
        "type": "object",
        "required": [o.name for o in sig.outputs],
        "properties": {
            **out_props,
            "model_version": {"type": "string"},
            "request_id": {"type": "string"},
            "degraded": {"type": "boolean"},
            "entity_found": {"type": "boolean"},
            "decision": {"enum": ["positive", "negative"]},
        },
    }
    prediction = {"type": "object", "required": [o.name for o in sig.outputs],
                  "properties": {**out_props, "entity_found": {"type": "boolean"}}}  # fmt: skip
    max_rows = getattr(settings, "max_batch_rows", 10_000)

    def op(summary: str, body: dict[str, Any] | None, ok: dict[str, Any]) -> dict[str, Any]:
        err = {"content": {"application/json": {"schema": _ERROR}}}
        out: dict[str, Any] = {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
                "4XX": {"description": "Refused: the error names the field or the limit", **err},
                "503": {"description": "Overloaded or the feature store unavailable; retry later", **err},
                "504": {"description": "The deadline passed", **err},
            },
        }
        if body is not None:
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        return out

    infer_body = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "minItems": 1, "items": _tensor()},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                   "properties": {"name": {"type": "string"}}}},
            "parameters": {"type": "object"},
        },
    }  # fmt: skip
    anything = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"fourfold: {served.name}", "version": version},
        "paths": {
            "/predict": {"post": op("Score one event, fetching its entity's features", row, scored)},
            "/predict/batch": {
                "post": op(
                    "Score many events",
                    {
                        "type": "object",
                        "required": ["rows"],
                        "additionalProperties": False,
                        "properties": {"rows": {"type": "array", "items": row, "maxItems": max_rows}},
                    },
                    {
                        "type": "object",
                        "required": ["predictions", "model_version", "request_id", "degraded"],
                        "properties": {
                            "predictions": {"type": "array", "items": prediction},
                            "model_version": {"type": "string"},
                            "request_id": {"type": "string"},
                            "degraded": {"type": "boolean"},
                        },
                    },
                )
            },
            f"/v2/models/{served.name}/infer": {
                "post": op("Open Inference Protocol inference", infer_body, anything)
            },
            f"/v2/models/{served.name}": {"get": op("Model metadata", None, anything)},
            "/v2/health/live": {"get": op("Liveness", None, anything)},
            "/v2/health/ready": {"get": op("Readiness", None, anything)},
        },
    }
