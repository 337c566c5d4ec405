"""StreamOptions: one stream job's call options, frozen and validated before anything is opened."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from fourfold.errors import InvalidOptionError
from fourfold.stream.logs.base import parse_kind

__all__ = ["StreamOptions"]

BATCH = 2_000  # events per poll batch
EXACTLY_ONCE_BATCH = 5_000  # with --exactly-once: each batch is a transaction
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


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
    commit_interval_ms: int | None = None  # None: 100 ms, spaced out to 500 ms when checkpoints are slow
    follow: bool = False
    instance: str | None = None  # this process's stable name in the group (the transactional id)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a pod: the kubelet's probes and Prometheus come over its IP
    max_keys: int = 200_000
    runtime: str = "auto"

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
        if self.follow and kinds["source"] != "jsonl":
            raise InvalidOptionError("--follow is for a JSONL file source (a log is always followed)")

    @property
    def events_per_batch(self) -> int:
        """``batch_size``, else 2,000 events - 5,000 with ``exactly_once``, where each batch is one Kafka
        transaction and one checkpoint: about one per 100 ms at full speed, as often as Kafka Streams commits
        its exactly-once work (measured here: a fifth more events/s than 2,000 a transaction)."""
        if self.batch_size is not None:
            return self.batch_size
        return EXACTLY_ONCE_BATCH if self.exactly_once else BATCH
