"""The options of one batch job: a small frozen value, checked when it is made - a value that is not
allowed is an :class:`~fourfold.errors.InvalidOptionError` naming the option and what it accepts, never a
silently different job.

    >>> opts = BatchOptions(model="models:/churn/production", input="users/", output="scores/",
    ...                     id_cols=("user_id",), partition="date=2025-04-15")
    >>> opts.partition_values
    {'date': '2025-04-15'}
    >>> BatchOptions(model="m", input="users/", output="scores/", engine="sprak")
    Traceback (most recent call last):
    ...
    fourfold.errors.InvalidOptionError: --engine must be one of 'local', 'spark'; got 'sprak'

The orchestrator (``job.py``) hands the parts explicit values taken from here (paths, the partition, the
table ...), never the options object itself.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fourfold.batch.spark_master import check_master
from fourfold.errors import InvalidOptionError

__all__ = [
    "ENGINES",
    "RUNTIMES",
    "SQL_SCHEMES",
    "BatchOptions",
    "output_kind",
    "parse_as_of",
    "parse_partition",
]

ENGINES = ("local", "spark")
RUNTIMES = ("auto", "native", "onnx", "c")
SQL_SCHEMES = ("postgresql://", "postgres://", "duckdb://")
_STORE_SCHEMES = ("redis://", "rediss://", "unix://", "sqlite://")


def _one_of(option: str, value: object, allowed: Sequence[str]) -> InvalidOptionError:
    return InvalidOptionError(f"{option} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def output_kind(output: str) -> str:
    """What ``--output`` names: ``"parquet"`` (a directory), ``"postgres"`` or ``"store"`` (a store)."""
    if output.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if output.startswith(_STORE_SCHEMES):
        return "store"
    if "://" in output and not output.startswith("file://"):
        raise InvalidOptionError(
            f"--output {output!r} is not supported: use a directory, postgresql://..., redis://... or "
            "sqlite:///path.db"
        )
    return "parquet"


def parse_partition(partition: str | None) -> dict[str, str]:
    """``"date=2025-04-15,region=eu"`` -> ``{"date": "2025-04-15", "region": "eu"}``."""
    if not partition:
        return {}
    out: dict[str, str] = {}
    for item in partition.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or "/" in key + value or value.strip() in ("", ".", ".."):
            raise InvalidOptionError(f"--partition wants key=value[,key=value], got {partition!r}")
        out[key.strip()] = value.strip()
    return out


def parse_as_of(text: str) -> int:
    """ISO 8601 (``2025-04-15``, ``2025-04-15T02:00:00Z``; naive means UTC) or epoch ms -> epoch ms."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidOptionError(
            f"--as-of wants an ISO 8601 time (2025-04-15T00:00:00Z) or epoch milliseconds, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class BatchOptions:
    """One batch job, as ``fourfold batch`` takes it (each field is the CLI option of the same name)."""

    model: str
    input: str
    output: str
    id_cols: tuple[str, ...] = ()
    partition: str | None = None
    workers: int = 1  # local engine: worker processes
    threads: int | None = None  # local engine: model threads per process (default: the cores / workers)
    batch_rows: int = 65_536
    resume: bool = False
    overwrite: bool = False  # replace a non-empty output directory fourfold did not write
    max_rejected: float | None = None  # a count, or a fraction below 1
    runtime: str = "auto"  # auto: the runtime the package was compiled for
    engine: str = "local"
    spark_master: str | None = None  # default: the running session, else local[*]
    query: str | None = None  # the SQL for a postgresql:// or duckdb:// input
    table: str | None = None  # the table (postgresql:// output) or namespace (feature store output)
    quarantine: str | None = None  # where a database or store output's rejected rows go
    features: str | None = None  # a features.yaml instead of the one in the model package
    events: str | None = None  # the event log windowed features are computed from
    timestamp: str | None = None  # the rows' as-of time column for windowed features
    as_of: str | None = None  # or one as-of time for every row (ISO 8601)
    progress: bool | None = None  # a progress line on stderr (default: when stderr is a terminal)

    def __post_init__(self) -> None:
        ids = (self.id_cols,) if isinstance(self.id_cols, str) else tuple(self.id_cols)
        object.__setattr__(self, "id_cols", ids)
        for name in ("model", "input", "output"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidOptionError(f"--{name} is required (got {getattr(self, name)!r})")
        if any(not c for c in ids) or len(set(ids)) != len(ids):
            raise InvalidOptionError(f"--id-cols wants distinct column names, got {','.join(ids)!r}")
        if self.engine not in ENGINES:
            raise _one_of("--engine", self.engine, ENGINES)
        if self.runtime not in RUNTIMES:
            raise _one_of("--runtime", self.runtime, RUNTIMES)
        for name in ("workers", "batch_rows", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidOptionError(
                    f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}"
                )
        limit = self.max_rejected
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                                  or not math.isfinite(limit) or limit < 0):  # fmt: skip
            raise InvalidOptionError(
                f"--max-rejected must be a count >= 0 or a fraction below 1, got {limit!r}"
            )
        self._check_io()
        self._check_windowed()
        self._check_engine()

    def _check_io(self) -> None:
        sql = self.input.startswith(SQL_SCHEMES)
        if sql and not self.query:
            raise InvalidOptionError(f"a SQL input ({self.input.split('://')[0]}://) needs --query")
        if self.query and not sql:
            raise InvalidOptionError(
                f"--query is only for a postgresql:// or duckdb:// input; --input {self.input!r} is files"
            )
        kind = output_kind(self.output)
        if kind == "parquet":
            for name in ("table", "quarantine"):
                if getattr(self, name) is not None:
                    where = " (its rejected rows go to its _quarantine/)" if name == "quarantine" else ""
                    raise InvalidOptionError(
                        f"--{name} is for a postgresql:// or feature store output; --output {self.output!r} "
                        f"is a directory{where}"
                    )
        self.partition_values  # noqa: B018  (parsed now: a typo fails before anything runs)

    def _check_windowed(self) -> None:
        if self.events is None:
            for name in ("timestamp", "as_of"):
                if getattr(self, name) is not None:
                    raise InvalidOptionError(
                        f"--{name.replace('_', '-')} sets the as-of time of windowed features computed from "
                        "--events; pass --events LOG too"
                    )
            return
        if self.timestamp is not None and self.as_of is not None:
            raise InvalidOptionError(
                "--timestamp and --as-of exclude each other: --timestamp COLUMN gives each row its own as-of "
                "time, --as-of TIME one time for every row"
            )
        if self.as_of is not None:
            parse_as_of(self.as_of)

    def _check_engine(self) -> None:
        if self.engine == "local":
            if self.spark_master is not None:
                raise InvalidOptionError("--spark-master is for --engine spark")
            return
        if self.workers != 1 or self.threads is not None:
            raise InvalidOptionError(
                "--workers and --threads are for --engine local; Spark runs one Python worker per core"
            )
        if self.spark_master is not None:
            check_master(self.spark_master)
        if self.events is not None:
            raise InvalidOptionError(
                "--events is for --engine local: the Spark engine does not compute windowed features "
                "(pass them as input columns)"
            )

    # -- derived values ------------------------------------------------------------------------------------
    @property
    def partition_values(self) -> dict[str, str]:
        return parse_partition(self.partition)

    @property
    def as_of_ms(self) -> int | None:
        return None if self.as_of is None else parse_as_of(self.as_of)

    @property
    def sql_input(self) -> bool:
        return self.input.startswith(SQL_SCHEMES)

    def show_progress(self) -> bool:
        return sys.stderr.isatty() if self.progress is None else self.progress

    def model_threads(self, processes: int) -> int:
        """Model threads per process: ``threads``, else the cores shared out between the processes."""
        return self.threads or max(1, (os.cpu_count() or 1) // processes)
