"""Helpers of tests/deploy: the options every pattern needs, and reading a generated base back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from fourfold.cli.main import app

STREAM = ["--source", "kafka://kafka-0:9092,kafka-1:9092/payments",
          "--sink", "kafka://kafka-0:9092/decisions", "--store", "redis://redis:6379/0"]  # fmt: skip
BATCH = [
    "--input",
    "s3://bucket/in/",
    "--output",
    "s3://bucket/scores/{date}",
    "--partition",
    "date={yesterday}",
]
PATTERN_ARGS = {"online": [], "batch": BATCH, "stream": STREAM}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def load_resources(base: Path) -> dict[str, dict[str, Any]]:
    """``{kind: resource}`` of the files a base's kustomization.yaml lists (recursing into sub-bases)."""
    out: dict[str, dict[str, Any]] = {}
    for rel in yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]:
        path = base / rel
        if path.is_dir():
            out.update({f"{rel}/{k}": v for k, v in load_resources(path).items()})
        else:
            doc = yaml.safe_load(path.read_text())
            out[doc["kind"]] = doc
    return out


def resource_files(base: Path) -> list[Path]:
    files: list[Path] = []
    for rel in yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]:
        path = base / rel
        files += resource_files(path) if path.is_dir() else [path]
    return files
