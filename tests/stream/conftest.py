"""Fixtures for the stream tests: the demo's fraud model as a package (features inside), and demo
transaction logs as JSON events in arrival order."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import fraud_package


@pytest.fixture(scope="session")
def fraud_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compiled fraud package (XGBoost, the demo's feature set, decision threshold 0.85)."""
    return fraud_package(tmp_path_factory.mktemp("stream-model"))
