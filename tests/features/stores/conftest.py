"""Fixtures for the online stores: a real ``redis-server`` per test session, each backend by name, and
stores whose TTLs a test runs out (a fake clock for memory and SQLite, a wait on Redis's own clock)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from fourfold.features.stores import (
    AsyncAdapter,
    AsyncOnlineStore,
    MemoryStore,
    OnlineStore,
    SQLiteStore,
    open_async_store,
    open_store,
)
from serving import wait_until

BACKENDS = ["memory", "sqlite", "redis"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, password: str | None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(password: str | None = None, unixsocket: Path | None = None) -> Iterator[int]:
    """A fresh ``redis-server`` on a free loopback port (and ``unixsocket``), without persistence;
    yields the port and stops the server on leaving."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: ./dev test installs it (apt-get install redis-server)"
        )
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--daemonize", "no", *(["--requirepass", password] if password else [])]
    args += ["--unixsocket", str(unixsocket), "--unixsocketperm", "700"] if unixsocket else []
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _ping(port, password):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.01)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    with redis_server() as port:
        yield port


@pytest.fixture(scope="session")
def redis_url(redis_port: int) -> str:
    return f"redis://127.0.0.1:{redis_port}/0"


@pytest.fixture
def start_redis() -> Callable[..., AbstractContextManager[int]]:
    """Starts a second, short-lived ``redis-server`` (``with start_redis(password=...) as port``)."""
    return redis_server


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh store of ``backend`` (a real file for SQLite, the session's server for Redis)."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'online.db'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def store(url: str) -> Iterator[OnlineStore]:
    opened = open_store(url)
    yield opened
    opened.close()


class FakeClock:
    """Epoch milliseconds that move only when the test calls :meth:`advance`; pass as a store's ``clock``."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def expiring_store(backend: str, url: str, tmp_path: Path, clock: FakeClock) -> Iterator[OnlineStore]:
    """A fresh store of ``backend`` whose TTLs :func:`expire` runs out: memory and SQLite on ``clock``."""
    opened: OnlineStore
    if backend == "memory":
        opened = MemoryStore(clock=clock)
    elif backend == "sqlite":
        opened = SQLiteStore(tmp_path / "online.db", clock=clock)
    else:
        opened = open_store(url)
    yield opened
    opened.close()


@pytest.fixture
def open_expiring_async(
    backend: str, url: str, tmp_path: Path, clock: FakeClock
) -> Callable[[], AsyncOnlineStore]:
    """Opens an async store of ``backend`` whose TTLs :func:`expire` runs out (call it in the event loop that
    uses and closes it)."""
    if backend == "memory":
        return lambda: AsyncAdapter(MemoryStore(clock=clock), offload=False)
    if backend == "sqlite":
        return lambda: AsyncAdapter(SQLiteStore(tmp_path / "online.db", clock=clock), offload=True)
    return lambda: open_async_store(url)


@pytest.fixture
def expire(backend: str, url: str, namespace: str, clock: FakeClock) -> Iterator[Callable[[int], None]]:
    """``expire(ms)`` lets ``ms`` pass for the expiring stores: memory's and SQLite's fake clock advances;
    Redis expires keys on its own clock, so there it waits until every key of the test's namespace that
    had at most ``ms`` left to live is gone."""
    if backend != "redis":
        yield clock.advance
        return
    import redis

    with redis.Redis.from_url(url) as raw:

        def wait(ms: int) -> None:
            keys = [k for k in raw.scan_iter(f"ff:{namespace}:*") if 0 <= raw.pttl(k) <= ms]
            if keys:
                wait_until(lambda: raw.exists(*keys) == 0, what=f"Redis to expire {keys}")

        yield wait
