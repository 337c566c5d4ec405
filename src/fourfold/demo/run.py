"""``fourfold demo``: the whole foundation end to end on a synthetic card-transaction log.

generate the log -> features (offline engine) -> train XGBoost -> package -> compile to ONNX (parity-checked)
-> register as ``models:/fraud/production`` -> score one row and a batch with both runtimes.

    >>> # report = run_demo(events=200_000); print(report.render())
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fourfold.advise import LatencyReport, measure_latency
from fourfold.demo.data import write_transactions
from fourfold.demo.features import FEATURES, FRAUD_FEATURES
from fourfold.demo.train import train_fraud_model
from fourfold.features.agreement import engines_agree
from fourfold.model.compile import compile_model
from fourfold.model.package import save_model
from fourfold.model.predictor import Predictor
from fourfold.model.signature import Feature, Signature
from fourfold.registry.local import LocalRegistry

__all__ = ["DemoReport", "run_demo"]

MODEL_NAME = "fraud"


@dataclass(frozen=True)
class DemoReport:
    events: int
    users: int
    fraud_rate: float
    log_path: Path
    log_mb: float
    auc: float
    n_train: int
    n_holdout: int
    uri: str
    version: int
    parity: str
    engines: str
    latency: dict[str, LatencyReport] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def render(self) -> str:
        lines = [
            "fourfold demo - card-transaction fraud",
            f"  event log     {self.events:,} events, {self.users:,} users, "
            f"fraud rate {self.fraud_rate:.2%}, {self.log_mb:.1f} MB parquet at {self.log_path}",
            f"  model         XGBoost on {len(FEATURES)} features "
            f"({len(FRAUD_FEATURES.windowed)} windowed over user history), "
            f"trained on {self.n_train:,} events",
            f"  AUC           {self.auc:.4f} on the held-out last day ({self.n_holdout:,} events)",
            f"  registered    {self.uri}  (= models:/{MODEL_NAME}/{self.version})",
            f"  features      {self.engines}",
            f"  onnx          {self.parity}",
            "",
            f"  {'runtime':<8} {'1 row p50':>10} {'1 row p99':>10} {'10k rows':>10} {'rows/s':>12}",
        ]
        for name, r in self.latency.items():
            lines.append(
                f"  {name:<8} {r.single_row_p50_ms * 1000:>8.0f}us {r.single_row_p99_ms * 1000:>8.0f}us "
                f"{r.batch_ms:>8.1f}ms {r.batch_rows_per_s:>12,.0f}"
            )
        lines.append("")
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(lines)


def _signature() -> Signature:
    # mean / max / last over an empty window are missing (NaN): for those features that is a value.
    missing_ok = {f.name for f in FRAUD_FEATURES.windowed if math.isnan(f.empty_value)}
    return Signature.for_task("binary", [Feature(f, "float64", nullable=f in missing_ok) for f in FEATURES])


def run_demo(*, events: int = 1_000_000, seed: int = 0, out_dir: Path = Path("demo-output")) -> DemoReport:
    """Run the demo, register the model in the local registry, and return what it measured."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    log_path = write_transactions(out_dir / "transactions.parquet", n_events=events, seed=seed)
    import pyarrow.parquet as pq

    table = pq.read_table(log_path)
    seconds["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = train_fraud_model(table, seed=seed)
    seconds["features+train"] = time.perf_counter() - t0

    t0 = time.perf_counter()  # the training features are what the live engine would have computed
    agreement = engines_agree(table, FRAUD_FEATURES, fraction=min(1.0, 100_000 / max(table.num_rows, 1)))
    seconds["engine check"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pkg = save_model(
        result.model,
        out_dir / "fraud-model",
        name=MODEL_NAME,
        signature=_signature(),
        features=FRAUD_FEATURES,
        sample=result.sample,
        metadata={"auc_holdout_day": round(result.auc, 5), "trained_on": str(log_path), "seed": seed},
        overwrite=True,
    )
    parity = compile_model(pkg.path)
    version = LocalRegistry().register(pkg.path, name=MODEL_NAME, aliases=["production"])
    seconds["package+compile+register"] = time.perf_counter() - t0

    from fourfold.registry.resolve import resolve

    registered = resolve(f"models:/{MODEL_NAME}/production")
    sample = {c: np.asarray(result.sample[c].to_numpy(), dtype=np.float64).tolist() for c in FEATURES}
    latency = {
        rt: measure_latency(Predictor(registered, runtime=rt), sample=sample) for rt in ("native", "onnx")
    }

    fraud = table["is_fraud"].to_numpy()
    return DemoReport(
        events=table.num_rows,
        users=len(table["user_id"].unique()),
        fraud_rate=float(np.mean(fraud)),
        log_path=log_path,
        log_mb=log_path.stat().st_size / 1e6,
        auc=result.auc,
        n_train=result.n_train,
        n_holdout=result.n_holdout,
        uri=f"models:/{MODEL_NAME}/production",
        version=version.version,
        parity=parity.summary(),
        engines=(
            f"offline {'=' if agreement.agree else '!='} incremental engine on {agreement.events:,} events "
            f"({agreement.values:,} values, {agreement.mismatches} mismatches, "
            f"sums max rel diff {agreement.max_rel_diff:.0e})"
        ),
        latency=latency,
        seconds=seconds,
    )
