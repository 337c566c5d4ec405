"""StreamOptions: one stream job's call options, frozen and validated before anything is opened."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fourfold.errors import InvalidOptionError
from fourfold.stream.logs.base import parse_kind

__all__ = ["StreamOptions"]

BATCH = 2_000  # events per poll batch
EXACTLY_ONCE_BATCH = 10_000  # with --exactly-once: each batch is a transaction
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
ENGINES = ("local", "flink")
STATE_BACKENDS = ("hashmap", "rocksdb")
_CONF_KEY = re.compile(r"[a-z][a-z0-9_.-]*")


@dataclass(frozen=True)
class StreamOptions:
    """What ``fourfold stream`` is asked to do (see ``fourfold stream --help`` for each option)."""

    model: str
    source: str
    sink: str
    dlq: str | None = None
    group: str = "fourfold"
    store: str | None = None  # default: the FOURFOLD_STORE setting, else SQLite under FOURFOLD_HOME
    features: str | None = None
    exactly_once: bool = False
    threshold: float | None = None
    id_field: str = "event_id"
    with_features: bool = True
    batch_size: int | None = None  # default: events_per_batch
    max_wait_ms: int = 20
    commit_interval_ms: int | None = None  # None: 250 ms, spaced out to 500 ms when checkpoints are slow
    follow: bool = False
    instance: str | None = None  # this process's stable name in the group (the transactional id)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a pod: the kubelet's probes and Prometheus come over its IP
    max_keys: int = 200_000
    runtime: str = "auto"
    #: ``local`` (the stream processor, in this process) or ``flink`` (a PyFlink job: docs/stream.md)
    engine: str = "local"
    #: jars for the Flink job's classpath (``pipeline.jars``): the Kafka connector and kafka-clients
    flink_jars: tuple[str, ...] = ()
    #: Flink's parallelism (None: min(8, the machine's cores))
    parallelism: int | None = None
    state_backend: str = "hashmap"  # Flink's keyed state: hashmap (on the heap) or rocksdb
    #: more Flink configuration, (key, value) pairs over fourfold's settings (docs/stream.md)
    flink_conf: tuple[tuple[str, str], ...] = ()
    workers: int = 1  # group members started by this command, one process each (fourfold.stream.workers)

    def __post_init__(self) -> None:
        kinds = {"source": parse_kind(self.source), "sink": parse_kind(self.sink)}
        if self.dlq is not None:
            kinds["dlq"] = parse_kind(self.dlq)
        if self.dlq is not None and self.dlq == self.sink:
            raise InvalidOptionError("--dlq must not be the --sink: dead letters would read as decisions")
        if self.source == self.sink and self.source != "-":
            raise InvalidOptionError("--sink must not be the --source")
        if not _GROUP.fullmatch(self.group):
            raise InvalidOptionError(
                f"--group must be 1-200 letters, digits, '_', '.' or '-', starting with a letter or digit, "
                f"got {self.group!r:.80}"
            )
        if self.exactly_once and any(k != "kafka" for k in kinds.values()):
            bad = ", ".join(f"--{n} {k}" for n, k in kinds.items() if k != "kafka")
            raise InvalidOptionError(
                f"--exactly-once needs Kafka for the source, the sink and the dead-letter log (got {bad}): "
                "a file sink is already exactly-once, cut back to its checkpoint on restart"
            )
        if self.threshold is not None and not (
            math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0
        ):
            raise InvalidOptionError(f"--threshold must be a number in [0, 1], got {self.threshold}")
        if not 1 <= self.events_per_batch <= 100_000:
            raise InvalidOptionError(f"--batch-size must be 1..100000, got {self.batch_size}")
        if not 0 <= self.max_wait_ms <= 60_000:
            raise InvalidOptionError(f"--max-wait-ms must be 0..60000, got {self.max_wait_ms}")
        if self.commit_interval_ms is not None and not 0 <= self.commit_interval_ms <= 60_000:
            raise InvalidOptionError(f"--commit-interval-ms must be 0..60000, got {self.commit_interval_ms}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise InvalidOptionError(f"--metrics-port must be 0..65535, got {self.metrics_port}")
        if not self.metrics_host or any(c.isspace() for c in self.metrics_host):
            raise InvalidOptionError(
                f"--metrics-host must be an address to listen on, got {self.metrics_host!r:.80}"
            )
        if self.max_keys < 1:
            raise InvalidOptionError(f"--max-keys must be >= 1, got {self.max_keys}")
        if not self.id_field:
            raise InvalidOptionError("--id-field must not be empty")
        if self.instance is not None and not _GROUP.fullmatch(self.instance):
            raise InvalidOptionError(f"--instance must look like a --group name, got {self.instance!r:.80}")
        if not 1 <= self.workers <= 64:
            raise InvalidOptionError(f"--workers must be 1..64, got {self.workers}")
        if self.workers > 1 and kinds["source"] not in ("kafka", "redis-stream"):
            raise InvalidOptionError(
                f"--workers {self.workers} needs a partitioned --source (kafka:// or redis-stream://): "
                "a JSONL file has one reader"
            )
        if self.workers > 1 and self.metrics_port and self.metrics_port + self.workers - 1 > 65535:
            raise InvalidOptionError(
                f"--metrics-port {self.metrics_port} with --workers {self.workers}: the workers listen on "
                f"{self.metrics_port}..{self.metrics_port + self.workers - 1}, past 65535"
            )
        if self.follow and kinds["source"] != "jsonl":
            raise InvalidOptionError("--follow is for a JSONL file source (a log is always followed)")
        if self.engine not in ENGINES:
            raise InvalidOptionError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r:.40}")
        if self.engine == "flink":
            self._check_flink(kinds)
        else:
            flink = (("--flink-jars", self.flink_jars), ("--parallelism", self.parallelism),
                     ("--flink-conf", self.flink_conf),
                     ("--state-backend", self.state_backend != "hashmap"))  # fmt: skip
            given = [flag for flag, value in flink if value]
            if given:
                raise InvalidOptionError(f"{', '.join(given)} is for --engine flink (the engine is local)")

    def _check_flink(self, kinds: dict[str, str]) -> None:
        """The Flink runner's rules: Kafka or files, the Kafka connector's jars when Kafka is used."""
        for name, kind in kinds.items():
            url = getattr(self, name)
            if kind == "redis-stream":
                raise InvalidOptionError(
                    f"--engine flink reads and writes Kafka or files, not --{name} {url}"
                )
            if url == "-":
                raise InvalidOptionError(
                    f"--engine flink needs a file path for --{name}, not - (stdin/stdout)"
                )
        if "kafka" in kinds.values() and not self.flink_jars:
            which = ", ".join(f"--{n}" for n, k in kinds.items() if k == "kafka")
            raise InvalidOptionError(
                f"--engine flink with Kafka ({which}) needs --flink-jars: the Kafka connector is not in "
                "Flink's Python package - give the jars of org.apache.flink:flink-connector-kafka and "
                "org.apache.kafka:kafka-clients, comma-separated (docs/stream.md)"
            )
        for jar in self.flink_jars:
            if "://" not in jar and not Path(jar).is_file():
                raise InvalidOptionError(
                    f"--flink-jars: {jar!r:.200} is not a file (give paths or file:// URLs)"
                )
        if self.parallelism is not None and not 1 <= self.parallelism <= 1024:
            raise InvalidOptionError(f"--parallelism must be 1..1024, got {self.parallelism}")
        if self.state_backend not in STATE_BACKENDS:
            raise InvalidOptionError(
                f"--state-backend must be one of {', '.join(STATE_BACKENDS)}, got {self.state_backend!r:.40}"
            )
        for key, _ in self.flink_conf:
            if not _CONF_KEY.fullmatch(key):
                raise InvalidOptionError(
                    f"--flink-conf takes KEY=VALUE with a Flink option key, got {key!r:.80}"
                )
        pairs = (("--batch-size", self.batch_size), ("--metrics-port", self.metrics_port))
        unused = [flag for flag, value in pairs if value is not None]
        if unused:
            raise InvalidOptionError(
                f"{', '.join(unused)} is for the local engine: Flink sizes its Python bundles "
                "(--flink-conf python.fn-execution.bundle.size=N) and serves its own metrics"
            )
        if self.workers != 1:
            raise InvalidOptionError("--workers is for the local engine: Flink's is --parallelism")

    @property
    def events_per_batch(self) -> int:
        """``batch_size``, else 2,000 events - 10,000 with ``exactly_once``, where each batch is one Kafka
        transaction and one checkpoint (every key the batch changed): about one per 150 ms at full speed,
        near Kafka Streams' 100 ms exactly-once commits; measured here: 14 % more events/s than 5,000 a
        transaction, a fifth more again than 2,000. A batch is what arrived within ``max_wait_ms``, so at
        a low rate it is small and the latency does not grow."""
        if self.batch_size is not None:
            return self.batch_size
        return EXACTLY_ONCE_BATCH if self.exactly_once else BATCH

    @property
    def flink_parallelism(self) -> int:
        """``parallelism``, else min(8, the machine's cores): the seed's 8, no more slots than cores
        (each parallel instance is a Python worker scoring on a core of its own)."""
        if self.parallelism is not None:
            return self.parallelism
        return max(1, min(8, os.cpu_count() or 1))
