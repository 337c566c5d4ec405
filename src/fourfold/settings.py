"""Deployment settings, read from ``FOURFOLD_*`` environment variables.

>>> import os; os.environ["FOURFOLD_HOME"] = "/tmp/ff"
>>> Settings().home.as_posix()
'/tmp/ff'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FOURFOLD_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".fourfold",
        description="Where the local registry and caches live (FOURFOLD_HOME).",
    )
    store: str | None = Field(
        default=None,
        description="The online feature store URL (FOURFOLD_STORE): memory://, sqlite:////abs/path.db, "
        "redis://host:port/db. Default: a SQLite file in FOURFOLD_HOME.",
    )
    registry: Literal["auto", "local", "mlflow"] = Field(
        default="auto",
        description="Where models:/ URIs resolve: 'local', 'mlflow', or 'auto' = MLflow when "
        "MLFLOW_TRACKING_URI is set, else local (FOURFOLD_REGISTRY).",
    )

    spark_executor_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a new Spark session on a cluster waits for its first executor before the job "
        "fails naming the master (FOURFOLD_SPARK_EXECUTOR_TIMEOUT).",
    )

    @property
    def store_url(self) -> str:
        """The store URL, or the embedded default: ``sqlite:///`` + ``$FOURFOLD_HOME/features.db``."""
        return self.store or f"sqlite:///{self.home.absolute() / 'features.db'}"
