"""Online serving settings: ``FOURFOLD_*`` environment variables, a YAML config file, or CLI flags.

>>> ServeSettings(model="models:/fraud/production", max_batch_size=32).deadline_ms
100.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServeSettings"]


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FOURFOLD_", extra="ignore")

    model: str = Field("models:/fraud/production", description="The model URI to serve (FOURFOLD_MODEL).")
    runtime: Literal["auto", "native", "onnx", "c"] = Field("auto", description="Model runtime.")
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, ge=0, le=65535, description="Port (0: any free port).")
    workers: int = Field(1, ge=1, description="Worker processes sharing the port.")
    threads: int = Field(1, ge=1, description="Model threads per worker (OpenMP, ONNX Runtime, BLAS).")
    store: str | None = Field(None, description="Online feature store URL; default: SQLite in FOURFOLD_HOME.")
    features: Path | None = Field(
        None, description="A features.yaml used instead of the one in the model package (FOURFOLD_FEATURES)."
    )
    feature_timeout_ms: float = Field(40.0, gt=0, description="Budget for the feature fetch.")
    feature_timeout_per_row_ms: float = Field(
        0.1, ge=0, description="Added to the feature budget per entity asked for (/predict/batch)."
    )
    deadline_ms: float = Field(
        100.0, gt=0, description="Per-request deadline (header X-Deadline-Ms overrides)."
    )
    deadline_per_row_ms: float = Field(
        0.25, ge=0, description="Added to the deadline per row a /predict/batch or /infer request holds."
    )
    max_batch_size: int = Field(64, ge=1, description="Rows per micro-batch.")
    max_batch_wait_ms: float = Field(
        0.0, ge=0, description="Longest wait for in-flight requests to join a batch (0: those ready now)."
    )
    cache_size: int = Field(10_000, ge=0, description="Prediction cache entries (0 = off).")
    cache_ttl_s: float = Field(60.0, gt=0, description="Prediction cache time to live.")
    cache_url: str | None = Field(
        None, description="A redis:// URL for a prediction cache shared by all workers and replicas."
    )
    admission: Literal["adaptive", "fixed"] = Field(
        "fixed",
        description="fixed: at most max_inflight requests in flight per worker; adaptive: the limit follows "
        "their latency, between min_inflight and max_inflight. Over the limit a request waits in the "
        "queue (queue-time shedding) or is refused with 503 + Retry-After before its body is read. "
        "fixed is the default: measured, it kept more goodput (docs/online.md).",
    )
    max_inflight: int = Field(
        256, ge=1, description="The most requests in flight per worker (the adaptive limit's ceiling)."
    )
    min_inflight: int | None = Field(
        None,
        ge=1,
        description="The adaptive limit's floor. Default: half of max_inflight - under sustained overload "
        "a lower limit only refuses more clients that retry at once (see docs/online.md).",
    )
    target_latency_ms: float | None = Field(
        None,
        gt=0,
        description="The service time (90th percentile) the adaptive limit holds requests under; grows "
        "with a request's deadline. Default: half of deadline_ms.",
    )
    max_queue: int = Field(
        64, ge=0, description="Requests per worker that may wait for a slot (0: none; over it: 503)."
    )
    queue_timeout_ms: float = Field(
        10.0,
        ge=0,
        description="The longest a request waits for a slot before a 503; a queue that stood this long "
        "is served newest first and refuses arrivals at once.",
    )
    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest request body (413 above).")
    max_batch_rows: int = Field(10_000, ge=1, description="Most rows in one request.")
    token: SecretStr | None = Field(None, description="Bearer token required on every non-probe route.")
    token_file: Path | None = Field(None, description="A file holding the bearer token.")
    reload_interval_s: float = Field(5.0, ge=0, description="Registry polling for a moved alias (0 = off).")
    access_log: bool = Field(
        True, description="Structured JSON access log lines on the fourfold.access logger."
    )
    graceful_timeout_s: float = Field(
        10.0, ge=0, description="How long SIGTERM waits for in-flight requests."
    )

    @model_validator(mode="after")
    def _admission_fits(self) -> ServeSettings:
        if self.min_inflight is not None and self.min_inflight > self.max_inflight:
            raise ValueError(
                f"min_inflight ({self.min_inflight}) must not be over max_inflight ({self.max_inflight})"
            )
        if self.queue_timeout_ms >= self.deadline_ms:
            raise ValueError(
                f"queue_timeout_ms ({self.queue_timeout_ms}) must be under deadline_ms ({self.deadline_ms}): "
                "a request that waited out the deadline in the queue cannot be answered in time"
            )
        if self.target_latency_ms is not None and self.target_latency_ms > self.deadline_ms:
            raise ValueError(
                f"target_latency_ms ({self.target_latency_ms}) must not be over "
                f"deadline_ms ({self.deadline_ms})"
            )
        return self

    @property
    def inflight_floor(self) -> int:
        """The adaptive limit's floor: ``min_inflight``, half of ``max_inflight`` unless set."""
        return self.min_inflight if self.min_inflight is not None else max(1, self.max_inflight // 2)

    @property
    def target_latency_s(self) -> float:
        """The adaptive limit's latency target for a one-row request with the default deadline."""
        ms = self.target_latency_ms if self.target_latency_ms is not None else self.deadline_ms / 2
        return ms / 1000

    def bearer(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return None

    @classmethod
    def from_file(cls, path: str | Path, **overrides: object) -> ServeSettings:
        """Settings from a YAML file; environment variables and ``overrides`` win over it."""
        import os

        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        from_file = {k: v for k, v in data.items() if f"FOURFOLD_{str(k).upper()}" not in os.environ}
        return cls(**{**from_file, **{k: v for k, v in overrides.items() if v is not None}})
