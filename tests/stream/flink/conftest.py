"""The Flink environment's tests: PyFlink imported once with its dependencies' import-time warnings
silenced (apache-beam, httplib2 and pyparsing deprecations - not fourfold's to fix), and the gateway JVM
PyFlink starts once per process let run to the session's end (its Popen object is dropped by PyFlink),
and the loopback worker's gRPC thread of a finished job let close its channel noisily."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import apache_beam.runners.common  # noqa: F401
    import httplib2  # noqa: F401
    import pyflink.datastream
    import pyflink.fn_execution.beam.beam_operations  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        r"ignore:subprocess \d+ is still running:ResourceWarning",
        "ignore:unclosed file:ResourceWarning",
        "ignore::pytest.PytestUnraisableExceptionWarning",
        # PyFlink runs a local job's Python worker in this process (loopback); the worker's gRPC reader
        # thread of a finished job may raise as its channel closes. A failure inside a function fails
        # the job, and run_flink raises it.
        "ignore:Exception in thread read_grpc_client_inputs:pytest.PytestUnhandledThreadExceptionWarning",
    ):
        config.addinivalue_line("filterwarnings", line)
