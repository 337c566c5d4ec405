"""BentoML and MLServer serving the same XGBoost model, each in its own virtual environment (created on
first use under ``~/.cache/fourfold-bench``: the peers' pins must not touch fourfold's environment).

Settings are each peer's best on this machine kind: one model thread (OpenMP) per worker; BentoML with
two workers; MLServer with inference in the server process (``parallel_workers=0``), since its worker
pool's IPC costs more than a tree model's prediction (MLServer #854, #1046).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CACHE = Path.home() / ".cache" / "fourfold-bench"

BENTO_SERVICE = """
import os

import bentoml
import numpy as np
import xgboost as xgb


@bentoml.service(workers=int(os.environ.get("BENTO_WORKERS", "2")))
class Fraud:
    def __init__(self) -> None:
        self.model = xgb.XGBClassifier()
        self.model.load_model(os.environ["SEED_MODEL"])

    @bentoml.api
    def infer(self, features: list[float]) -> dict:
        return {"score": float(self.model.predict_proba(np.array([features]))[0][1])}
"""


def venv(name: str, packages: list[str]) -> Path:
    """A virtual environment with ``packages`` (made once); returns its bin directory."""
    root = CACHE / name
    bin_dir = root / "bin"
    marker = root / ".ready"
    if not marker.exists():
        print(f"creating the {name} environment (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        subprocess.run([str(bin_dir / "pip"), "install", "-q", *packages], check=True)
        marker.touch()
    return bin_dir


def bentoml_command(workdir: Path, port: int) -> list[str]:
    bin_dir = venv("bentoml", ["bentoml", "xgboost-cpu", "scikit-learn"])
    (workdir / "bento_service.py").write_text(BENTO_SERVICE)
    return [
        str(bin_dir / "bentoml"),
        "serve",
        "bento_service:Fraud",
        "--working-dir",
        str(workdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def mlserver_command(
    workdir: Path, model_json: Path, port: int, grpc_port: int, metrics_port: int
) -> list[str]:
    bin_dir = venv("mlserver", ["mlserver", "mlserver-xgboost", "xgboost-cpu", "scikit-learn"])
    repo = workdir / "mlserver-models"
    (repo / "fraud").mkdir(parents=True, exist_ok=True)
    (repo / "fraud" / "model.json").write_bytes(model_json.read_bytes())
    (repo / "fraud" / "model-settings.json").write_text(json.dumps({
        "name": "fraud", "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.json", "version": "1"},
    }))  # fmt: skip
    (repo / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": 0, "debug": False,
    }))  # fmt: skip
    return [str(bin_dir / "mlserver"), "start", str(repo)]
