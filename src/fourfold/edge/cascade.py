"""The Embedded + Online cascade: the edge model answers the rows it is sure of, the online server the
rest - and the device keeps answering when the server cannot.

    >>> # c = CascadeModel("fraud-edge/", "http://127.0.0.1:8000", low=0.05, high=0.95)
    >>> # c.predict_one(row)                       # {'score': .., 'label': .., 'source': 'local'}
    >>> # c.predict_one(row, allow_remote=False)   # never leaves the device

* a score below ``low`` or above ``high`` is answered locally (``source: "local"``);
* between them the row is sent to the server's ``/predict`` (or the Open Inference Protocol's
  ``/v2/models/{name}/infer``) and its answer returned (``source: "server"``, with ``local_score``).
  ``/predict`` gets what a caller sends: the request fields of the bundle's ``features.json`` (the
  server computes the windows and entity features itself, from its store, and refuses them from a
  caller) plus ``extra`` (the entity id); a model without a feature set gets the whole row;
* a server that refuses, fails, is unreachable or slower than ``budget_ms`` gives the local answer
  marked ``source: "fallback"`` with the reason; after ``failures_to_open`` failures in a row the server
  is not asked for ``cooldown_s`` (one request then probes it again), so a dead server costs nothing;
* ``allow_remote=False`` (per call or for the object) never sends a byte: ``source: "local"`` with
  ``private: True``.

Only the standard library (``http.client``) and the edge runtime: vendorable with it. One keep-alive
connection, reopened after an error; not thread-safe (one cascade per thread).
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from .model import EdgeModel

__all__ = ["CascadeModel"]

# what a kept-alive connection the server has closed raises on its next request
_STALE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, http.client.RemoteDisconnected)


class CascadeModel:
    def __init__(
        self,
        bundle: str | os.PathLike[str] | EdgeModel,
        server_url: str | None,
        *,
        low: float,
        high: float,
        budget_ms: float = 50.0,
        protocol: str = "predict",
        model_name: str | None = None,
        allow_remote: bool = True,
        headers: Mapping[str, str] | None = None,
        failures_to_open: int = 3,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.edge = bundle if isinstance(bundle, EdgeModel) else EdgeModel(bundle)
        if self.edge.task != "binary":
            raise ValueError(
                f"the cascade needs a binary classifier's score; this bundle is {self.edge.task}"
            )
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
        if protocol not in ("predict", "oip"):
            raise ValueError(f"protocol must be 'predict' or 'oip', got {protocol!r}")
        if budget_ms <= 0:
            raise ValueError(f"budget_ms must be > 0, got {budget_ms}")
        self.low, self.high = float(low), float(high)
        self.budget_s = budget_ms / 1000.0
        self.protocol = protocol
        self.allow_remote = allow_remote
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._conn: http.client.HTTPConnection | None = None
        self._headers = {"Content-Type": "application/json", **dict(headers or {})}
        self.server_url = server_url
        if server_url is not None:
            url = urllib.parse.urlsplit(server_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"server_url must be http(s)://host[:port], got {server_url!r}")
            self._https = url.scheme == "https"
            self._host, self._port = url.hostname, url.port
            base = url.path.rstrip("/")
            name = model_name or self.edge.name
            self._path = f"{base}/predict" if protocol == "predict" else f"{base}/v2/models/{name}/infer"
        self._request = _request_fields(self.edge.path)

    # -- the one call ----------------------------------------------------------------------------------
    def predict_one(
        self,
        row: Mapping[str, Any],
        *,
        allow_remote: bool | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Score one row. ``extra``: fields only the server uses (an entity id for its feature store),
        sent with the row and never read locally. A row the edge check refuses raises
        :class:`~fourfold_edge.EdgeInputError` and nothing is sent."""
        local = self.edge.predict_one(row)
        score = local["score"]
        if score < self.low or score > self.high:
            return {**local, "source": "local"}
        if not (self.allow_remote if allow_remote is None else allow_remote):
            return {**local, "source": "local", "private": True}
        if self.server_url is None:
            return {**local, "source": "fallback", "reason": "no server configured"}
        now = self._clock()
        if self._open_until > now:
            return {**local, "source": "fallback", "reason": "server skipped after repeated failures"}
        try:
            answer = self._ask(row, extra)
        except _Failure as err:
            self._failed(now)
            return {**local, "source": "fallback", "reason": str(err)}
        self._failures = 0
        return {**answer, "source": "server", "local_score": score}

    def _failed(self, now: float) -> None:
        self._failures += 1
        if self._failures >= self.failures_to_open:
            self._open_until = now + self.cooldown_s
            self._failures = self.failures_to_open - 1  # one more failure after the cooldown re-opens it

    # -- the server ------------------------------------------------------------------------------------------
    def _body(self, row: Mapping[str, Any], extra: Mapping[str, Any] | None) -> bytes:
        if self.protocol == "predict":
            sent = dict(row) if self._request is None else {f: row[n] for n, f in self._request if n in row}
            return json.dumps({**sent, **dict(extra or {})}).encode()
        x = [float(row[name]) if row[name] is not None else None for name in self.edge.feature_order]
        body: dict[str, Any] = {
            "inputs": [{"name": "input", "shape": [1, len(x)], "datatype": "FP64", "data": x}]
        }
        if extra:
            body["parameters"] = dict(extra)
        return json.dumps(body).encode()

    def _ask(self, row: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
        body = self._body(row, extra)
        start = time.monotonic()
        try:
            resp, data = self._post(body, start)
        except TimeoutError:
            self._close()
            raise _Failure(f"the server took longer than the budget ({self.budget_s * 1000:g} ms)") from None
        except (OSError, http.client.HTTPException) as exc:
            self._close()
            raise _Failure(f"the server is unreachable: {type(exc).__name__}: {exc}") from None
        if time.monotonic() - start > self.budget_s:
            raise _Failure(f"the server took longer than the budget ({self.budget_s * 1000:g} ms)")
        if resp.status != 200:
            raise _Failure(f"the server answered {resp.status}: {data[:200].decode(errors='replace')}")
        try:
            doc = json.loads(data)
            return self._answer(doc)
        except (ValueError, KeyError, TypeError, IndexError):
            raise _Failure(f"the server's answer is not a prediction: {data[:200]!r}") from None

    def _post(self, body: bytes, start: float) -> tuple[http.client.HTTPResponse, bytes]:
        """POST ``body``; a kept-alive connection the server has closed while idle (a restart, its idle
        timeout) is tried once more on a new one - a prediction is safe to ask twice - within what is
        left of the budget."""
        for attempt in (0, 1):
            reused = self._conn is not None
            conn = self._connection()
            left = self.budget_s - (time.monotonic() - start)
            if left <= 0:
                raise TimeoutError
            if conn.sock is not None:
                conn.sock.settimeout(left)
            else:
                conn.timeout = left
            try:
                conn.request("POST", self._path, body=body, headers=self._headers)
                resp = conn.getresponse()
                return resp, resp.read()
            except _STALE:
                if not reused or attempt:
                    raise
                self._close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.protocol == "predict":
            out = {"score": float(doc["score"]), "label": int(doc["label"])}
            if "model_version" in doc:
                out["model_version"] = doc["model_version"]
            return out
        outputs = {o["name"]: o["data"] for o in doc["outputs"]}
        return {"score": float(outputs["score"][0]), "label": int(outputs["label"][0])}

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.budget_s)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._close()

    def __enter__(self) -> CascadeModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()


class _Failure(Exception):
    pass


def _request_fields(bundle: os.PathLike[str] | str) -> list[tuple[str, str]] | None:
    """(feature, field) of each request feature in the bundle's ``features.json``; None without one
    (a model without a feature set: every feature is the caller's)."""
    path = os.path.join(bundle, "features.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        contract = json.load(f)
    return [(str(r["feature"]), str(r["field"])) for r in contract.get("request", [])]
