"""The JSONL log: one JSON object per line in a file (or stdin / stdout) - the embedded default.

A file is one partition whose offsets are byte positions (the start of each line), so a restart seeks
straight to its checkpoint. ``follow=True`` keeps reading lines appended later (``tail -f``); otherwise
the source is ``finished`` at the end of the file. A line is read only once its newline is written (a
writer's half line waits), except the file's last line when not following.

A JSONL sink appends lines and ``fsync``s on ``flush``; its ``mark`` is the file's size, so a batch
whose checkpoint did not land is cut off again on restart (exactly-once into a file).

    >>> # src = JsonlSource("events.jsonl"); snk = JsonlSink("decisions.jsonl")
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from fourfold.errors import InvalidOptionError, NotFoundError
from fourfold.stream.logs.base import Message, OutRecord, Rebalance

__all__ = ["JsonlSink", "JsonlSource", "path_of"]

_READ = 1 << 20


def path_of(url: str) -> Path | None:
    """The file a JSONL URL names (``None`` for ``-``)."""
    if url == "-":
        return None
    return Path(url.removeprefix("file://"))


class JsonlSource:
    """A JSONL file (or stdin, ``-``) as a one-partition source."""

    def __init__(self, url: str, *, follow: bool = False) -> None:
        self.url = url
        self._path = path_of(url)
        self.follow = follow
        self.finished = False
        self._listener: Rebalance | None = None
        self._file: BinaryIO
        if self._path is None:
            self.name = "stdin"
            self._file = sys.stdin.buffer
        else:
            if not self._path.is_file():
                raise NotFoundError(f"the stream source {url!r} is not a file")
            self.name = (
                f"file-{self._path.resolve().as_posix().strip('/').replace('/', '_').replace(':', '_')}"
            )
            self._file = self._path.open("rb")
        self._pos = 0  # byte offset of the next line to read into ``_ready``
        self._buf = b""
        self._ready: list[Message] = []  # lines read, not handed out yet (from ``_next`` on)
        self._next = 0

    def start(self, listener: Rebalance) -> None:
        self._listener = listener
        start = listener.assigned([0]).get(0)
        if start:
            self.seek({0: start})

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while True:
            out = self._lines(max_messages)
            if out or self.finished:
                return out
            if time.monotonic() >= deadline:
                return out
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def _lines(self, limit: int) -> list[Message]:
        ready = self._ready
        while len(ready) - self._next < limit:
            chunk = self._file.read1(_READ) if hasattr(self._file, "read1") else self._file.read(_READ)
            if not chunk:
                if not self.follow and self._buf:  # the end: a last line without a newline still counts
                    end = self._pos + len(self._buf)
                    if self._buf.strip():
                        ready.append(Message(0, self._pos, None, self._buf, None, end))
                    self._pos, self._buf = end, b""
                self.finished = not self.follow
                break
            parts = (self._buf + chunk).split(b"\n")
            self._buf = parts.pop()  # a line whose newline is not written yet
            pos = self._pos
            for line in parts:
                start, pos = pos, pos + len(line) + 1
                if line.strip():
                    ready.append(Message(0, start, None, line, None, pos))
            self._pos = pos
        out = ready[self._next : self._next + limit]
        self._next += len(out)
        if self._next == len(ready):
            ready.clear()
            self._next = 0
        return out

    def seek(self, offsets: Mapping[int, int]) -> None:
        offset = offsets.get(0)
        if offset is None:
            return
        if self._path is None:
            raise InvalidOptionError("stdin cannot be read again from an offset: stream from a file")
        self._file.seek(offset)
        self._pos, self._buf, self.finished = offset, b"", False
        self._ready.clear()
        self._next = 0

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Nothing to do: a file's progress lives in the checkpoint."""

    def committed(self, partitions: Sequence[int]) -> dict[int, int | None]:
        return dict.fromkeys(partitions)

    def lag(self) -> dict[int, int]:
        """Bytes not read yet (a file's length is its produced offset)."""
        if self._path is None:
            return {}
        try:
            return {0: max(0, self._path.stat().st_size - self._pos)}
        except OSError:
            return {}

    def close(self) -> None:
        if self._path is not None:
            self._file.close()


class JsonlSink:
    """Appends one line per record to a file (or stdout, ``-``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._path = path_of(url)
        self._pending: list[bytes] = []
        self._file: BinaryIO
        if self._path is None:
            self._file = sys.stdout.buffer
        else:
            if self._path.is_dir():
                raise InvalidOptionError(f"the stream sink {url!r} is a directory: give a .jsonl file")
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self._path.open("ab")
            except OSError as exc:
                raise InvalidOptionError(f"cannot open the stream sink {url!r}: {exc.strerror}") from None

    def send(self, records: Sequence[OutRecord]) -> None:
        self._pending.extend(r.value for r in records)

    def flush(self) -> None:
        if self._pending:
            self._pending.append(b"")
            self._file.write(b"\n".join(self._pending))
            self._pending.clear()
        self._file.flush()
        if self._path is not None:
            os.fsync(self._file.fileno())

    def mark(self) -> int | None:
        return None if self._path is None else self._file.tell()

    def rewind(self, mark: int) -> None:
        if self._path is None:
            raise InvalidOptionError("stdout cannot be rewound")
        self._pending.clear()
        self._file.flush()
        if self._file.tell() > mark:
            self._file.truncate(mark)
            self._file.seek(mark)

    def close(self) -> None:
        if self._path is not None:
            self._file.close()
