"""The HTTP protocol the server runs: uvicorn's httptools protocol, with the admission asked as soon as a
POST's headers are parsed. A request refused there costs the parse and one write of a constant - no
ASGI task, no body kept, no log line: measured in-process, 3 us of CPU and one write, against 13 us and
two writes for a refusal made by the app (which still refuses what this one lets through, and every
request when the server runs under another protocol, as in the tests) and 80 us for a prediction.

    $ uvicorn --http fourfold.online.protocol:AdmissionProtocol ...   # what fourfold.online.server runs
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fourfold.online.admission import REJECTION, RETRY_AFTER, Admission

__all__ = ["AdmissionProtocol", "REFUSED"]

#: the whole refusal on the wire, written as is
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nretry-after: %s\r\n\r\n%s" % (len(REJECTION), RETRY_AFTER.encode(), REJECTION)
)


class AdmissionProtocol(HttpToolsProtocol):
    """Refuses a POST (every POST route is admitted; the probes are GETs) that the app's
    :class:`~fourfold.online.admission.Admission` would refuse at once, before uvicorn makes a request
    of it. Anything else - a GET, a pipelined request, an app without a gate - goes on to the app."""

    _gate: Admission | None = None
    _refused = False
    _close_after = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._gate = _gate_of(self.app)

    def on_headers_complete(self) -> None:
        gate = self._gate
        if (
            gate is not None
            and (self.cycle is None or self.cycle.response_complete)
            and self.parser.get_method() == b"POST"
        ):
            reason = gate.refusal()
            if reason is not None:
                gate.reject(reason)
                self._refused = True
                self._close_after = not self.parser.should_keep_alive()
                self.transport.write(REFUSED)
                return
        # a request goes on: a keep-alive timer armed after an earlier refusal must not cut it
        self._unset_keepalive_if_required()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()
            return
        self._refused = False
        if self._close_after:
            self.transport.close()
        elif self.cycle is None or self.cycle.response_complete:
            self.on_response_complete()  # counts the request, arms the keep-alive timeout


def _gate_of(app: object) -> Admission | None:
    """The admission gate fourfold's Router keeps in its state, under the middleware uvicorn may wrap it
    in (proxy headers, trace logging: each keeps the app it wraps as ``.app``)."""
    for _ in range(4):
        state = getattr(app, "state", None)
        gate = state.get("admission") if isinstance(state, dict) else None
        if isinstance(gate, Admission):
            return gate
        app = getattr(app, "app", None)
        if app is None:
            break
    return None
