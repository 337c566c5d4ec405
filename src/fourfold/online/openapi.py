"""The server's OpenAPI 3.1 document, derived from the served model's signature and feature set, so
clients (and the fuzz tests) see the exact request shapes.

    >>> # GET /openapi.json
"""

from __future__ import annotations

from typing import Any

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


def openapi(served: Served, version: str) -> dict[str, Any]:
    sig = served.predictor.signature
    request_fields = {f.name for f in served.features.request} if served.features else set(sig.feature_names)
    row: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    if served.online is not None:
        row["properties"][served.online.key_column] = {"type": "string", "minLength": 1}
        row["required"].append(served.online.key_column)
    for f in sig.inputs:
        if f.name in request_fields:
            row["properties"][f.name] = {"type": ["number", "null"] if f.nullable else "number"}
            row["required"].append(f.name)
    scored = {"type": "object", "properties": {o.name: {"type": "number"} for o in sig.outputs}}

    def op(summary: str, body: dict[str, Any] | None, ok: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
                "4XX": {"description": "Bad request", "content": {"application/json": {"schema": _ERROR}}},
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
                        "properties": {"rows": {"type": "array", "items": row}},
                    },
                    anything,
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
