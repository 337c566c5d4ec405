"""The Spark master a job runs on: ``local[...]``, a standalone cluster (``spark://host:port``, with
``,host:port`` for standby masters), or another cluster manager (``yarn``, ``k8s://...``) - checked
before a session starts, and a bound on how long a new session waits for its first executor.

    >>> is_local("local[2]"), is_loopback("spark://127.0.0.1:7077")
    (True, True)
    >>> standalone_hosts("spark://a:7077,b:7077")
    [('a', 7077), ('b', 7077)]
    >>> check_master("spark://host")
    Traceback (most recent call last):
    ...
    fourfold.errors.InvalidOptionError: --spark-master 'spark://host' wants spark://HOST:PORT[,HOST:PORT]

A bad URL must fail fast, not hang: a standalone master that does not answer is refused before the
session starts (Spark's own client would retry for a minute, then leave the job waiting for resources
forever), and a new session that gets no executor within ``FOURFOLD_SPARK_EXECUTOR_TIMEOUT`` seconds
(default 120: no free cores or memory on the cluster, executors that cannot start) is stopped with an
error naming the URL.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any

from fourfold.errors import InvalidOptionError, UnavailableError

__all__ = ["check_master", "is_local", "is_loopback", "reach", "standalone_hosts", "wait_for_executors"]

_LOCAL = re.compile(r"local(\[(\*|\d+)(,\d+)?\])?")
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:]+\]|[^:/,\[\]]+):(\d{1,5})")
_CONNECT_TIMEOUT = 5.0


def is_local(master: str) -> bool:
    return _LOCAL.fullmatch(master) is not None


def standalone_hosts(master: str) -> list[tuple[str, int]]:
    """``spark://h1:p1,h2:p2`` -> ``[(h1, p1), (h2, p2)]`` (a standalone master and its standbys)."""
    pairs = []
    for item in master.removeprefix("spark://").split(","):
        m = _HOST_PORT.fullmatch(item)
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise InvalidOptionError(f"--spark-master {master!r} wants spark://HOST:PORT[,HOST:PORT]")
        pairs.append((m.group(1).strip("[]"), int(m.group(2))))
    return pairs


def check_master(master: str) -> None:
    """Refuse a master URL Spark cannot take (an :class:`InvalidOptionError`, exit 2)."""
    if is_local(master) or master == "yarn" or master.startswith(("k8s://", "mesos://")):
        return
    if master.startswith("spark://"):
        standalone_hosts(master)
        return
    raise InvalidOptionError(
        f"--spark-master must be local[*], local[N], spark://HOST:PORT, yarn or k8s://URL; got {master!r}"
    )


def is_loopback(master: str) -> bool:
    """A standalone master on this machine's loopback: the driver must then listen there too."""
    if not master.startswith("spark://"):
        return False
    return all(
        host in ("localhost", "::1") or host.startswith("127.") for host, _ in standalone_hosts(master)
    )


def reach(master: str) -> None:
    """Connect to a standalone master (any of its hosts) or raise :class:`UnavailableError` naming it."""
    if not master.startswith("spark://"):
        return
    why = []
    for host, port in standalone_hosts(master):
        try:
            with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT):
                return
        except OSError as exc:
            why.append(f"{host}:{port}: {exc.strerror or exc}")
    raise UnavailableError(
        f"cannot reach the Spark master {master} ({'; '.join(why)}): is the master running, and is this its "
        "spark:// URL (shown on the master's web UI)?"
    )


def wait_for_executors(spark: Any, master: str, timeout: float) -> int:
    """Wait until a new session has an executor; the number registered. Raises
    :class:`UnavailableError` (the caller stops the session) after ``timeout`` seconds, or at once when
    Spark gave the application up (a master that refused it)."""
    sc = spark.sparkContext._jsc.sc()
    deadline = time.monotonic() + timeout
    while True:
        executors = int(sc.getExecutorMemoryStatus().size()) - 1  # the driver's block manager is listed
        if executors > 0:
            return executors
        if sc.isStopped():
            raise UnavailableError(
                f"the Spark master {master} gave the application up before any executor started (see the "
                "master's log)"
            )
        if time.monotonic() > deadline:
            raise UnavailableError(
                f"no executor of the Spark master {master} started within {timeout:g} s: does the cluster "
                "have free cores and memory for this application (the master's web UI lists running "
                "applications)? FOURFOLD_SPARK_EXECUTOR_TIMEOUT sets the wait"
            )
        time.sleep(0.2)
