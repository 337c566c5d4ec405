"""The Spark session fourfold's Spark engine runs on: reuse the active one (on the master asked for),
or start one with the worker Python and one model thread per Python worker set, and quiet logging - on
the loopback address for a local master or a standalone master on 127.0.0.1.

    >>> # spark, created = spark_session("spark://127.0.0.1:7077")   # created: the caller stops it
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fourfold.batch.spark_master import check_master, is_local, is_loopback, reach, wait_for_executors
from fourfold.errors import ConflictError, UnavailableError

__all__ = ["spark_session", "submitted_session"]

_QUIET_LOG4J = """\
rootLogger.level = error
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


# -- the session ---------------------------------------------------------------------------------------------
def spark_session(master: str | None = None, app_name: str = "fourfold-batch") -> tuple[Any, bool]:
    """``(session, created)``: the active SparkSession if there is one - then ``created`` is False and the
    caller must not stop it - else a new one on ``master`` (default ``local[*]``).

    A running session on another master than the one asked for is refused (409), never silently used:
    ``master=None`` takes whatever runs. A new session on a cluster is started only once its standalone
    master answers, and is given ``FOURFOLD_SPARK_EXECUTOR_TIMEOUT`` seconds to get an executor."""
    from fourfold.extras import require

    require("pyspark", "spark", "the Spark batch engine")
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    try:  # this thread's active session, else the process's default one (made in another thread)
        active = SparkSession.active()
    except PySparkRuntimeError:
        active = None
    if active is not None:
        running = str(active.sparkContext.master)
        if master is not None and master != running:
            raise ConflictError(
                f"--spark-master {master}: this process already runs a SparkSession on {running} (a "
                "notebook, a test, spark-submit); fourfold never starts a second one: stop that session "
                "first, or leave --spark-master out to score on it"
            )
        return active, False
    master = master or "local[*]"
    check_master(master)
    reach(master)  # a standalone master that does not answer fails now, not after a minute of retries
    try:
        spark = _builder(master, app_name).getOrCreate()
    except Exception as exc:  # a JVM error: the context was stopped while it started (a refused app)
        if is_local(master):
            raise
        raise UnavailableError(
            f"the Spark master {master} did not take the application: {_first_error(exc)}"
        ) from exc
    spark.sparkContext.setLogLevel("ERROR")
    if not is_local(master):
        from fourfold.settings import Settings

        try:
            wait_for_executors(spark, master, Settings().spark_executor_timeout)
        except BaseException:
            spark.stop()
            raise
    return spark, True


def submitted_session(app_name: str = "fourfold-batch") -> Any:
    """The session of a ``spark-submit`` run (its ``--master`` and ``--conf``), with fourfold's settings
    for the Python workers added (``spark_submit.py``); on a cluster, given an executor as
    :func:`spark_session` does."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    from fourfold.settings import Settings

    SparkContext._ensure_initialized()  # the gateway spark-submit started: SparkConf() then reads its conf
    master = SparkConf().get("spark.master", "local[*]") or "local[*]"
    base = SparkSession.builder.appName(app_name)
    for key, value in _WORKER_CONF.items():
        base = base.config(key, value)
    if is_loopback(master):
        base = base.config("spark.driver.host", "127.0.0.1")
    spark = base.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if not is_local(master):
        try:
            wait_for_executors(spark, master, Settings().spark_executor_timeout)
        except BaseException:
            spark.stop()
            raise
    return spark


#: for every master: one Python worker process kept per executor core (the model loaded once in it), and
#: one model thread in it (Spark runs a Python worker per core)
_WORKER_CONF = {"spark.python.worker.reuse": "true", "spark.executorEnv.OMP_NUM_THREADS": "1"}


def _builder(master: str, app_name: str) -> Any:
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    for key, value in _WORKER_CONF.items():
        builder = builder.config(key, value)
    log4j = _quiet_log4j()
    builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j.as_uri()}")
    if is_local(master) or is_loopback(master):  # the driver and the executors are this machine
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        builder = builder.config("spark.driver.host", "127.0.0.1")
    if is_local(master):  # the Python workers are this interpreter
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    else:  # executors elsewhere: keep what the user set, else this interpreter's path
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return builder


def _first_error(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Exception:" in ln or "Error:" in ln]
    return (errors[0] if errors else lines[0] if lines else type(exc).__name__)[:300]


def _quiet_log4j() -> Path:
    """A log4j2 configuration that logs errors only (and no "Setting default log level" banner)."""
    from fourfold.settings import Settings

    path = Settings().home / "spark" / "log4j2.properties"
    if not path.exists() or path.read_text() != _QUIET_LOG4J:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(_QUIET_LOG4J)
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _conf(spark: Any, settings: dict[str, str]) -> Iterator[None]:
    """Runtime SQL settings for the duration of the job, restored afterwards (a shared session); the job
    descriptions set meanwhile are cleared."""
    old = {k: spark.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        spark.sparkContext.setJobDescription(None)
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)
