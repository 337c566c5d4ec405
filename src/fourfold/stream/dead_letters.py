"""Dead letters: an event the stream cannot decide on, with the reason and the original payload.

A dead letter is a JSON object::

    {"code": "late", "reason": "...", "source": "kafka://.../tx", "partition": 3, "offset": 1042,
     "key": "u000042", "payload": "<the original line or message, as text>", "at": 1767225600000}

``code`` is one of :data:`CODES`; a payload that is not UTF-8 comes as ``payload_base64`` instead.
"""

from __future__ import annotations

import base64
import json
import time

from fourfold.stream.logs.base import Message, OutRecord

__all__ = ["CODES", "dead_letter"]

#: why an event went to the dead-letter log
CODES = {
    "malformed": "not a JSON object",
    "invalid": "a field is missing, of the wrong type or out of range for the model",
    "late": "later than the feature set's allowed lateness",
}


def dead_letter(message: Message, code: str, reason: str, source: str, key: str | None = None) -> OutRecord:
    assert code in CODES, code
    body: dict[str, object] = {
        "code": code,
        "reason": reason,
        "source": source,
        "partition": message.partition,
        "offset": message.offset,
    }
    if key is None and message.key is not None:
        key = message.key.decode("utf-8", "replace")
    body["key"] = key
    try:
        body["payload"] = message.value.decode("utf-8")
    except UnicodeDecodeError:
        body["payload_base64"] = base64.b64encode(message.value).decode("ascii")
    body["at"] = time.time_ns() // 1_000_000
    record_key = f"{source}/{message.partition}/{message.offset}".encode()
    return OutRecord(record_key, json.dumps(body, ensure_ascii=False).encode())
