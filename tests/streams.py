"""Helpers for the stream tests and benchmarks: demo transactions as JSON events, JSONL files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fourfold import Predictor, load_package
from fourfold.demo.data import generate_transactions
from fourfold.demo.features import FRAUD_FEATURES
from fourfold.features.offline import compute_features


def fraud_package(root: Path) -> Path:
    """A compiled fraud package (XGBoost, the demo's feature set, decision threshold 0.85) under ``root``:
    the stream tests' model, and the Flink bench's."""
    import math

    import fourfold
    from fourfold import save_model
    from fourfold.demo.features import FEATURES, featurize
    from fourfold.demo.train import train_fraud_model
    from fourfold.model.signature import Feature, Signature

    log = generate_transactions(12_000, seed=11)
    result = train_fraud_model(featurize(log), n_estimators=30, max_depth=4)
    nullable = {f.name for f in FRAUD_FEATURES.windowed if math.isnan(f.empty_value)}
    sig = Signature.for_task("binary", [Feature(f, nullable=f in nullable) for f in FEATURES])
    pkg = save_model(result.model, root / "fraud", name="fraud", signature=sig, sample=result.sample,
                     features=FRAUD_FEATURES, threshold=0.85)  # fmt: skip
    fourfold.compile_model(pkg)
    return pkg.path


def events_of(log: pa.Table) -> list[dict[str, Any]]:
    """The log's rows as JSON-ready events (event_time as int ms), in arrival order."""
    t = log.set_column(
        log.schema.get_field_index("event_time"), "event_time", log["event_time"].cast(pa.int64())
    )
    return t.drop_columns(["is_fraud"]).to_pylist()


def demo_events(n: int, seed: int = 3) -> list[dict[str, Any]]:
    return events_of(generate_transactions(n, seed=seed))


def write_jsonl(path: Path, events: list[dict[str, Any]] | list[str]) -> Path:
    with path.open("w") as f:
        for e in events:
            f.write((e if isinstance(e, str) else json.dumps(e)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def offline(events: list[dict[str, Any]], model: Path) -> dict[Any, tuple[dict[str, float], float]]:
    """What the offline engine and the predictor give each event of the log, in arrival order."""
    log = pa.Table.from_pylist(events)
    log = log.set_column(log.schema.get_field_index("event_time"), "event_time",
                         log["event_time"].cast(pa.timestamp("ms", tz="UTC")))  # fmt: skip
    feats = compute_features(log, FRAUD_FEATURES, on_error="reject")
    pkg = load_package(model)
    names = pkg.signature.feature_names
    table = {n: feats[n].to_numpy(zero_copy_only=False).astype(np.float64) for n in names}
    scores = Predictor(pkg).predict(table)["score"]
    out = {}
    for i, e in enumerate(events):
        out[e["event_id"]] = ({n: float(table[n][i]) for n in names}, float(scores[i]))
    return out


def same(a: float | None, b: float) -> bool:
    if a is None:
        return bool(np.isnan(b))
    return a == b or abs(a - b) <= 1e-9 * max(1.0, abs(b))


def assert_parity(
    decisions: list[dict[str, Any]], expected: dict[Any, tuple[dict[str, float], float]]
) -> None:
    assert len(decisions) == len(expected)
    for d in decisions:
        features, score = expected[d["event_id"]]
        bad = {n: (d["features"][n], v) for n, v in features.items() if not same(d["features"][n], v)}
        assert not bad, (d["event_id"], bad)
        assert d["score"] == pytest.approx(score, abs=1e-6)
        assert d["action"] == ("block" if d["score"] > 0.85 else "allow")


class Process:
    """One ``fourfold stream`` process of the group (restartable under the same instance name)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._mark = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=err)

    def ready(self, timeout_s: float = 60) -> None:
        """Wait until the process says it streams (its SIGTERM handler is installed by then)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while b"streaming " not in self.log.read_bytes()[self._mark :]:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the stream did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.ready()
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def check_decisions(
    records: list[tuple[int, int, bytes | None, bytes]], events: list[dict[str, Any]], model: Path
) -> list[dict[str, Any]]:
    """Every input event decided; any duplicate identical to its first copy; parity. Returns the firsts."""
    first: dict[Any, dict[str, Any]] = {}
    for _, _, key, value in records:
        d = json.loads(value)
        assert key == str(d["event_id"]).encode()
        seen = first.setdefault(d["event_id"], d)
        assert (seen["score"], seen["features"], seen["action"]) == (d["score"], d["features"], d["action"])
    assert set(first) == {e["event_id"] for e in events}
    assert_parity(list(first.values()), offline(events, model))
    return list(first.values())
