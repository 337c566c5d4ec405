"""Test support: a real fourfold server on a free port (uvicorn in a thread), and waiting on a condition."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from fourfold.online.app import build_app
from fourfold.online.settings import ServeSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(
    settings: ServeSettings, clock: Callable[[], int] | None = None, port: int | None = None
) -> Iterator[str]:
    """Serve ``settings`` with uvicorn in a thread (on ``port``, else a free one); yields the base URL;
    stops on exit. ``clock``: the server's "now" in epoch ms (the time stored windows are read as of)."""
    port = port or free_port()
    config = uvicorn.Config(
        build_app(settings, clock=clock), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, timeout=30)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway ``redis-server`` on a free loopback port; stopped (if still running) on exit."""
    import shutil
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (./dev test installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "the condition") -> object:
    """Polls ``predicate`` every 10 ms until it returns something true, and returns that; fails naming
    ``what`` (and the last value seen) after ``timeout`` seconds. For outcomes a test cannot make happen
    on its own clock - a server's, another process's, Redis's - instead of a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}; the last check returned {last!r}")
        time.sleep(0.01)


def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} did not become ready")


@contextmanager
def serve_process(args: list[str], env: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """``fourfold serve ARGS`` as a subprocess on a free port; yields (base URL, the process)."""
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fourfold.cli.main", "serve", *args, "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)
