"""The Spark session fourfold's Spark engine runs on: reuse the active one, or start one with the
loopback address, the worker Python and one model thread per Python worker set, and quiet logging.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["spark_session"]

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
def _is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def spark_session(master: str = "local[*]", app_name: str = "fourfold-batch") -> tuple[Any, bool]:
    """``(session, created)``: the active (or default) SparkSession if there is one - then ``created`` is
    False and the caller must not stop it - else a new one on ``master``: no UI, quiet logs, the Python
    workers on this interpreter (local masters), one model thread per Python worker."""
    from fourfold.extras import require

    require("pyspark", "spark", "the Spark batch engine")
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    try:  # this thread's active session, else the process's default one (made in another thread)
        return SparkSession.active(), False
    except PySparkRuntimeError:
        pass
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.python.worker.reuse", "true")
        .config("spark.executorEnv.OMP_NUM_THREADS", "1")
    )
    if _is_local(master):  # the driver and the Python workers are this machine, this interpreter
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        log4j = _quiet_log4j()
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j.as_uri()}"
        )
    else:  # executors elsewhere: keep what the user set, else this interpreter's path
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark, True


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
