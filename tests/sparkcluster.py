"""A real Spark standalone cluster on 127.0.0.1 for tests and benches: a master and N workers started from
the installed pyspark package (``$SPARK_HOME`` = the package directory), each its own JVM.

    with standalone_cluster(tmp_path, workers=2) as cluster:
        cluster.url          # spark://127.0.0.1:PORT
        cluster.state()      # the master's web UI JSON: workers, active and completed applications

Every process is started in its own process group and the group is killed at the end, so the executors a
worker launched (and their Python workers) go too. The workers run Python as ``python`` (the venv's, by
default) with this process's environment - machines that share the venv, as a cluster shares an image.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Cluster", "free_port", "standalone_cluster"]

_START_TIMEOUT = 90.0  # two JVMs starting on a loaded 2-core machine take 10-20 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running standalone cluster: its master URL, the master's web UI and the processes."""

    url: str
    ui: str
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """The master's ``/json/``: ``workers``, ``aliveworkers``, ``activeapps``, ``completedapps`` ..."""
        with urllib.request.urlopen(f"{self.ui}/json/", timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
        return data

    def logs(self) -> str:
        """The last lines of every process's log (for a failure message)."""
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            for log in sorted(self.root.glob("*.log"))
        )


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each process group (the JVM and everything it started), SIGKILL after 10 s."""
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in reversed(procs):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group: executors a worker started outlive a TERM
        proc.wait()


@contextlib.contextmanager
def standalone_cluster(
    root: Path, workers: int = 2, cores: int = 1, memory: str = "1g", python: str = sys.executable
) -> Iterator[Cluster]:
    """A master and ``workers`` workers (``cores`` cores, ``memory`` each) on 127.0.0.1, up and registered;
    stopped (every process group killed) when the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    home = _spark_home()
    spark_class = str(home / "bin" / "spark-class")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": python}
    props = root / "spark-master.conf"
    props.write_text("spark.master.rest.enabled false\n")  # no REST server on the fixed port 6066
    port, ui_port = free_port(), free_port()
    cluster = Cluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}", root)
    try:
        cluster.procs.append(_start(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(ui_port), "--properties-file", str(props)],
            root / "master.log", env,
        ))  # fmt: skip
        # a worker that registers before the master is ALIVE gets no answer and retries ~10 s later: start
        # the workers once the master listens (they take seconds more to connect; it is ALIVE by then)
        _wait(cluster, lambda: _listens(port), "the master did not listen")
        for i in range(workers):
            work = root / f"worker-{i}"
            work.mkdir(exist_ok=True)
            cluster.procs.append(_start(
                [spark_class, "org.apache.spark.deploy.worker.Worker", cluster.url, "--host", "127.0.0.1",
                 "--cores", str(cores), "--memory", memory, "--webui-port", "0", "--work-dir", str(work)],
                root / f"worker-{i}.log", env,
            ))  # fmt: skip
        registered = f"{workers} workers did not register"
        _wait(cluster, lambda: cluster.state().get("aliveworkers", 0) >= workers, registered)
        yield cluster
    finally:
        _stop(cluster.procs)


def _listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(cluster: Cluster, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        dead = [p.args for p in cluster.procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a Spark process exited while the cluster started: {dead}\n{cluster.logs()}")
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} in {_START_TIMEOUT:g} s\n{cluster.logs()}")
        time.sleep(0.1)
