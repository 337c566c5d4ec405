"""The options of ``fourfold deploy k8s``: frozen values, each checked when it is made, so a manifest is
never written from a number Kubernetes (or fourfold) would refuse later.

The defaults are the seed's numbers and fourfold's own: an HPA at 60 % CPU between 3 and 50 replicas, a
stream of 8 partitions, the server's port (8000) and SIGTERM grace (10 s) - ``ServeSettings``' defaults,
stated here so that ``deploy`` imports no pattern (``tests/deploy`` holds them equal).

>>> Online().min_replicas, Online().max_replicas, Online().cpu_target
(3, 50, 60)
>>> Online(min_replicas=10, max_replicas=5)
Traceback (most recent call last):
...
fourfold.errors.InvalidOptionError: --max-replicas (5) must be at least --min-replicas (10)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from fourfold.deploy import checks
from fourfold.errors import InvalidOptionError

__all__ = [
    "GRACEFUL_TIMEOUT_S",
    "HEALTH_PORT",
    "MAX_INFLIGHT",
    "PATTERNS",
    "SERVE_PORT",
    "Batch",
    "Common",
    "Online",
    "Pattern",
    "Resources",
    "Stream",
]

Pattern = Literal["online", "batch", "stream"]
PATTERNS: tuple[Pattern, ...] = ("online", "batch", "stream")
ModelFrom = Literal["image", "volume", "pull"]

SERVE_PORT = 8000  # ServeSettings.port
GRACEFUL_TIMEOUT_S = 10.0  # ServeSettings.graceful_timeout_s: how long SIGTERM waits for in-flight requests
MAX_INFLIGHT = 256  # ServeSettings.max_inflight: requests in flight per worker before the queue and 503
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEALTH_PORT = 9000  # the stream's --metrics-port in the pod (it has no default of its own)


@dataclass(frozen=True)
class Resources:
    """A container's requests and limits. CPU request = limit by default: a whole core per worker, no
    CFS throttling inside a core (Guaranteed QoS), and the HPA's utilization is relative to the request."""

    cpu_request: str = "1"
    cpu_limit: str | None = "1"
    memory_request: str = "1Gi"
    memory_limit: str | None = "1Gi"

    def __post_init__(self) -> None:
        cpu = checks.quantity("--cpu-request", self.cpu_request, cpu=True)
        mem = checks.quantity("--memory-request", self.memory_request, cpu=False)
        if self.cpu_limit is not None and checks.quantity("--cpu-limit", self.cpu_limit, cpu=True) < cpu:
            raise InvalidOptionError(
                f"--cpu-limit ({self.cpu_limit}) must be at least --cpu-request ({self.cpu_request})"
            )
        if (
            self.memory_limit is not None
            and checks.quantity("--memory-limit", self.memory_limit, cpu=False) < mem
        ):
            raise InvalidOptionError(
                f"--memory-limit ({self.memory_limit}) must be at least --memory-request "
                f"({self.memory_request})"
            )

    @property
    def cores(self) -> int:
        """Whole cores requested (at least 1): the model threads a process is given."""
        return max(1, math.floor(checks.quantity("--cpu-request", self.cpu_request, cpu=True)))

    def to_k8s(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request}
        }
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v is not None}
        if limits:
            out["limits"] = limits
        return out


@dataclass(frozen=True)
class Common:
    """What every pattern's manifests share."""

    name: str  # the base name: resources are NAME-online, NAME-batch, NAME-stream
    image: str | None = None  # default: fourfold-NAME-PATTERN:TAG
    namespace: str | None = None  # default: none written (the namespace kubectl or kustomize gives)
    model_from: ModelFrom = "image"
    model_claim: str = "fourfold-models"  # --model-from volume: the PersistentVolumeClaim
    model_path: str | None = None  # --model-from volume: the package directory inside the claim
    store: str | None = None  # FOURFOLD_STORE: the online feature store URL
    resources: Resources = field(default_factory=Resources)
    env: tuple[tuple[str, str], ...] = ()  # more environment of every container (MLFLOW_TRACKING_URI ...)

    def __post_init__(self) -> None:
        for key, _ in self.env:
            if not _ENV_NAME.fullmatch(key):
                raise InvalidOptionError(
                    f"--env {key!r}: a variable name is letters, digits and '_', not first a digit"
                )
        # a CronJob's name is at most 52 characters (its Jobs add 11); NAME-stream is the longest
        checks.dns_label("--name", self.name, max_len=52 - len("-stream"))
        if self.image is not None:
            checks.image_ref("--image", self.image.replace("{pattern}", "online"))
        if self.namespace is not None:
            checks.dns_label("--namespace", self.namespace, starts_with_letter=False)
        if self.model_from not in ("image", "volume", "pull"):
            raise InvalidOptionError(f"--model-from must be image, volume or pull, got {self.model_from!r}")
        if self.model_from == "volume":
            checks.dns_label("--model-claim", self.model_claim, max_len=253, starts_with_letter=False)
            path = self.model_path
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise InvalidOptionError(
                    "--model-from volume needs --model-path: the package directory inside the claim, "
                    f"relative and without '..' (e.g. fraud/3), got {path!r}"
                )
        if self.store is not None and "://" not in self.store:
            raise InvalidOptionError(
                f"--store must be a URL such as redis://redis:6379/0, got {self.store!r:.80}"
            )

    def image_for(self, pattern: Pattern, tag: str) -> str:
        if self.image is None:
            return f"fourfold-{self.name}-{pattern}:{tag}"
        return self.image.replace("{pattern}", pattern)

    @property
    def shared_store(self) -> bool:
        """A store every replica reaches (not a file or the memory of one pod)."""
        return self.store is not None and self.store.startswith(("redis://", "rediss://"))


@dataclass(frozen=True)
class Online:
    """``fourfold serve`` as a Deployment, a Service, a PodDisruptionBudget and an HPA."""

    port: int = SERVE_PORT
    workers: int | None = None  # default: the whole cores requested
    scale_on: Literal["cpu", "inflight", "none"] = "cpu"
    min_replicas: int = 3
    max_replicas: int = 50
    replicas: int | None = None  # --scale-on none: the fixed replica count (default: --min-replicas)
    cpu_target: int = 60  # percent of the CPU request
    inflight_target: int | None = None  # per pod; default: 60 % of what admission lets in (workers x 256)
    prestop_s: int = 5  # the pod keeps serving this long after it is marked terminating
    graceful_timeout_s: float = GRACEFUL_TIMEOUT_S

    def __post_init__(self) -> None:
        checks.in_range("--port", self.port, 1, 65535)
        if self.workers is not None:
            checks.in_range("--workers", self.workers, 1, 256)
        if self.scale_on not in ("cpu", "inflight", "none"):
            raise InvalidOptionError(f"--scale-on must be cpu, inflight or none, got {self.scale_on!r}")
        checks.in_range("--min-replicas", self.min_replicas, 1, 10_000)
        checks.in_range("--max-replicas", self.max_replicas, 1, 10_000)
        if self.max_replicas < self.min_replicas:
            raise InvalidOptionError(
                f"--max-replicas ({self.max_replicas}) must be at least --min-replicas ({self.min_replicas})"
            )
        if self.replicas is not None:
            checks.in_range("--replicas", self.replicas, 1, 10_000)
            if self.scale_on != "none":
                raise InvalidOptionError(
                    f"--replicas is for --scale-on none; with --scale-on {self.scale_on} the HPA owns "
                    "the count (give --min-replicas / --max-replicas)"
                )
        checks.in_range("--cpu-target", self.cpu_target, 1, 100)
        if self.inflight_target is not None:
            checks.in_range("--inflight-target", self.inflight_target, 1, 1_000_000)
        checks.in_range("--prestop-seconds", self.prestop_s, 0, 300)
        if not (math.isfinite(self.graceful_timeout_s) and 0 <= self.graceful_timeout_s <= 3600):
            raise InvalidOptionError(
                f"--graceful-timeout must be 0..3600 seconds, got {self.graceful_timeout_s}"
            )

    def workers_for(self, resources: Resources) -> int:
        return self.workers if self.workers is not None else resources.cores

    def inflight_for(self, resources: Resources) -> int:
        """The HPA's in-flight target per pod: 60 % of the requests admission lets in before it queues."""
        if self.inflight_target is not None:
            return self.inflight_target
        return max(1, MAX_INFLIGHT * self.workers_for(resources) * 60 // 100)

    @property
    def termination_grace_s(self) -> int:
        """The pod's grace: the preStop sleep, then the server's drain, then 5 s for the lifespan's close."""
        return self.prestop_s + math.ceil(self.graceful_timeout_s) + 5


@dataclass(frozen=True)
class Batch:
    """``fourfold batch`` as a CronJob: one run per schedule, never two at once."""

    input: str
    output: str
    schedule: str = "0 2 * * *"
    time_zone: str = "Etc/UTC"
    partition: str | None = None  # e.g. date={yesterday}: rendered at each run's start time
    backoff_limit: int = 2  # retries of a run that failed with exit code 1 (2 and 3 fail the run at once)
    active_deadline_s: int | None = 6 * 3600
    workers: int = 1

    def __post_init__(self) -> None:
        if not self.input.strip():
            raise InvalidOptionError("--input must not be empty")
        if not self.output.strip():
            raise InvalidOptionError("--output must not be empty")
        if self.output.strip() == self.input.strip():
            raise InvalidOptionError("--output must not be the --input")
        checks.cron("--schedule", self.schedule)
        if not self.time_zone or " " in self.time_zone or self.time_zone.startswith("/"):
            raise InvalidOptionError(
                f"--time-zone must be a tz database name such as Etc/UTC, got {self.time_zone!r}"
            )
        checks.in_range("--backoff-limit", self.backoff_limit, 0, 100)
        if self.active_deadline_s is not None:
            checks.in_range("--active-deadline-seconds", self.active_deadline_s, 1, 7 * 24 * 3600)
        checks.in_range("--workers", self.workers, 1, 256)

    @property
    def extras(self) -> tuple[str, ...]:
        """The batch extras the input and output need (the CronJob schedules, so no croniter)."""
        urls = (self.input, self.output)
        out = []
        if any(u.startswith(("postgresql://", "postgres://")) for u in urls):
            out.append("postgres")
        if any(u.startswith("duckdb://") for u in urls):
            out.append("duckdb")
        if any(
            "://" in u and not u.startswith(("file://", "postgres", "duckdb://", "redis", "sqlite"))
            for u in urls
        ):
            out.append("cloud")
        if any(u.startswith(("redis://", "rediss://")) for u in urls):
            out.append("redis")
        return tuple(out)


@dataclass(frozen=True)
class Stream:
    """``fourfold stream`` as a Deployment of one consumer group, scaled by KEDA on the group's lag."""

    source: str
    sink: str
    dlq: str | None = None
    group: str = "fourfold"
    partitions: int = 8  # the source topic's partitions: more consumers than this would sit idle
    scale_on: Literal["lag", "none"] = "lag"
    min_replicas: int = 1
    max_replicas: int | None = None  # default: --partitions
    replicas: int | None = None  # --scale-on none: the fixed count (default: --partitions)
    lag_threshold: int = 10_000  # messages behind per replica: 5 poll batches of 2,000
    metrics_port: int = HEALTH_PORT

    def __post_init__(self) -> None:
        for option, url in (("--source", self.source), ("--sink", self.sink), ("--dlq", self.dlq)):
            if url is not None and not url.startswith(("kafka://", "redis-stream://")):
                raise InvalidOptionError(
                    f"{option} must be kafka://host:port/topic or redis-stream://host:port/db/name in a "
                    f"cluster (a file is one pod's, not a group's), got {url!r:.120}"
                )
        if self.sink == self.source:
            raise InvalidOptionError("--sink must not be the --source")
        if (
            not self.group
            or len(self.group) > 200
            or not self.group.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise InvalidOptionError(
                f"--group must be 1-200 letters, digits, '_', '.' or '-', got {self.group!r:.80}"
            )
        checks.in_range("--partitions", self.partitions, 1, 100_000)
        if self.scale_on not in ("lag", "none"):
            raise InvalidOptionError(f"--scale-on must be lag or none for a stream, got {self.scale_on!r}")
        checks.in_range("--min-replicas", self.min_replicas, 1, self.partitions)
        top = self.top_replicas
        checks.in_range("--max-replicas", top, 1, 100_000)
        if top > self.partitions:
            raise InvalidOptionError(
                f"--max-replicas ({top}) must not be over --partitions ({self.partitions}): a consumer "
                "beyond the topic's partitions gets none and sits idle"
            )
        if top < self.min_replicas:
            raise InvalidOptionError(
                f"--max-replicas ({top}) must be at least --min-replicas ({self.min_replicas})"
            )
        if self.replicas is not None:
            if self.scale_on != "none":
                raise InvalidOptionError(
                    "--replicas is for --scale-on none; with --scale-on lag KEDA owns the count "
                    "(give --min-replicas / --max-replicas)"
                )
            checks.in_range("--replicas", self.replicas, 1, 100_000)
            if self.replicas > self.partitions:
                raise InvalidOptionError(
                    f"--replicas ({self.replicas}) must not be over --partitions ({self.partitions}): a "
                    "consumer beyond the topic's partitions gets none and sits idle"
                )
        if self.scale_on == "lag" and not self.source.startswith("kafka://"):
            raise InvalidOptionError(
                "--scale-on lag reads the Kafka consumer group's lag: it needs a kafka:// --source "
                "(use --scale-on none for redis-stream://)"
            )
        checks.in_range("--lag-threshold", self.lag_threshold, 1, 100_000_000)
        checks.in_range("--metrics-port", self.metrics_port, 1, 65535)
        if self.source.startswith("kafka://"):
            self.kafka  # noqa: B018 - parses the URL now, to refuse a bad one before writing

    @property
    def top_replicas(self) -> int:
        return self.max_replicas if self.max_replicas is not None else self.partitions

    @property
    def fixed_replicas(self) -> int:
        return self.replicas if self.replicas is not None else self.partitions

    @property
    def kafka(self) -> tuple[str, str]:
        """The source's bootstrap servers and topic (as ``fourfold stream`` reads ``kafka://``)."""
        parts = urlsplit(self.source)
        topic = parts.path.strip("/")
        if parts.scheme != "kafka" or not parts.netloc or not topic or "/" in topic:
            raise InvalidOptionError(
                f"--source must be kafka://host:port[,host:port]/topic, got {self.source!r:.120}"
            )
        return parts.netloc, topic
