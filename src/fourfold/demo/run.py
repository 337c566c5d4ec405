"""``fourfold demo``: the whole foundation end to end on a synthetic card-transaction log.

generate the log (ending now) -> features (offline engine) -> train XGBoost -> package -> compile to ONNX
(parity-checked) -> register as ``models:/fraud/production`` -> score one row and a batch with both
runtimes -> write every user's window state to the online store -> score one transaction for a few users
with their windows read back from the store as of now (the online path).

    >>> # report = run_demo(events=200_000); print(report.render())
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fourfold import compile_model, load_predictor
from fourfold.advise import LatencyReport, measure_latency
from fourfold.demo.data import CATEGORIES, DEVICES, write_transactions
from fourfold.demo.features import FEATURES, FRAUD_FEATURES
from fourfold.demo.train import train_fraud_model
from fourfold.features.agreement import engines_agree
from fourfold.features.events import single_source
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import open_store
from fourfold.features.stores.base import redact_url
from fourfold.model.package import save_model
from fourfold.model.predictor import Predictor
from fourfold.model.signature import Feature, Signature
from fourfold.registry.local import LocalRegistry
from fourfold.settings import Settings

__all__ = ["EXAMPLE_TRANSACTION", "DemoReport", "OnlinePath", "UserScore", "run_demo"]

MODEL_NAME = "fraud"
DAYS = 7
#: the request fields of the transaction the report scores for each user (a web gift-card purchase)
EXAMPLE_TRANSACTION: dict[str, float] = {
    "amount": 480.0,
    "merchant_category": CATEGORIES.index("gift_cards"),
    "device": DEVICES.index("web"),
}
_SHOWN = ("txn_count_10m", "txn_count_1h", "amount_sum_1h", "amount_mean_7d")
_CANDIDATES = 500  # users scored to pick the three shown
_KEY, _TIME = single_source(FRAUD_FEATURES)


@dataclass(frozen=True)
class UserScore:
    """One user's windowed features read from the online store, and the example transaction's score.

    >>> UserScore("u000042", {"txn_count_1h": 3.0}, 0.91).score
    0.91
    """

    user_id: str
    features: dict[str, float]
    score: float


@dataclass(frozen=True)
class OnlinePath:
    """What the demo wrote to the online store and read back from it as of ``as_of``.

    >>> OnlinePath("memory://", 0, 0, datetime(2025, 4, 15, tzinfo=UTC), {}, []).users
    []
    """

    store_url: str
    entities: int
    stale: int
    as_of: datetime
    example: dict[str, float]
    users: list[UserScore]

    def curl(self, user_id: str) -> str:
        """The request ``fourfold serve`` answers for ``user_id`` with the example transaction.

        >>> path = OnlinePath("memory://", 0, 0, datetime(2025, 4, 15, tzinfo=UTC), {"amount": 9}, [])
        >>> print(path.curl("u1"))
        curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"user_id": "u1", "amount": 9}'
        """
        body = json.dumps({_KEY: user_id, **self.example})
        return f"curl -s localhost:8000/predict -H 'content-type: application/json' -d '{body}'"

    def render(self) -> list[str]:
        """The report's lines for the online path (empty when no user was read back)."""
        if not self.users:
            return []
        category, device = int(self.example["merchant_category"]), int(self.example["device"])
        request = (
            f"amount {self.example['amount']:.2f}, merchant_category {category} = {CATEGORIES[category]}, "
            f"device {device} = {DEVICES[device]}"
        )
        lines = [
            f"  online store  window state of {self.entities:,} users written to {self.store_url}"
            + (f" ({self.stale:,} stale)" if self.stale else ""),
            f"  as of now     windows read back from the store at {self.as_of:%H:%M:%S} UTC; the score of",
            f"                one transaction ({request}) for each user:",
            "    " + f"{'user':<10}" + "".join(f"{n:>15}" for n in _SHOWN) + f"{'score':>8}",
        ]
        for u in self.users:
            cells = "".join(f"{_cell(u.features.get(n, math.nan)):>15}" for n in _SHOWN)
            lines.append(f"    {u.user_id:<10}{cells}{u.score:>8.4f}")
        user = self.users[0].user_id
        lines += [
            f"  next          fourfold features get {user} -f models:/{MODEL_NAME}/production",
            f"                fourfold serve models:/{MODEL_NAME}/production"
            "     # needs pip install 'fourfold[serve]'",
            f"                {self.curl(user)}",
        ]
        return lines


def _cell(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


@dataclass(frozen=True)
class DemoReport:
    """What one demo run did and measured; :meth:`render` is what ``fourfold demo`` prints."""

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
    online: OnlinePath
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
            f"  AUC           {self.auc:.4f} on the held-out last 24 hours ({self.n_holdout:,} events)",
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
        online = self.online.render()
        if online:
            lines += ["", *online]
        lines.append("")
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(lines)


def _signature() -> Signature:
    # mean / max / last over an empty window are missing (NaN): for those features that is a value.
    missing_ok = {f.name for f in FRAUD_FEATURES.windowed if math.isnan(f.empty_value)}
    return Signature.for_task("binary", [Feature(f, "float64", nullable=f in missing_ok) for f in FEATURES])


def run_demo(*, events: int = 1_000_000, seed: int = 0, out_dir: Path = Path("demo-output")) -> DemoReport:
    """Run the demo on a log of the last 7 days up to now, register the model in the local registry, write
    the users' window state to the online store (``Settings().store_url``) and return what it measured."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    # The log ends now, so the windows read "as of now" from the online store hold the users' last events.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=DAYS)
    log_path = write_transactions(
        out_dir / "transactions.parquet", n_events=events, seed=seed, days=DAYS, start=start
    )
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
        metadata={"auc_holdout_last_24h": round(result.auc, 5), "trained_on": str(log_path), "seed": seed},
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

    t0 = time.perf_counter()
    online = _online_path(table, Settings().store_url)
    seconds["online store"] = time.perf_counter() - t0

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
        online=online,
        latency=latency,
        seconds=seconds,
    )


def _online_path(log: pa.Table, store_url: str, *, shown: int = 3) -> OnlinePath:
    """Materialize ``log`` into the store, then score :data:`EXAMPLE_TRANSACTION` for ``shown`` users with
    recent activity, their windows read back as of now, through ``models:/fraud/production``."""
    users = [str(u) for u in pc.unique(log[_KEY]).to_pylist()]
    with closing(open_store(store_url)) as store:
        online = OnlineFeatures(FRAUD_FEATURES, store)
        # A re-run replaces these users' state: without the delete, a user whose newest event in this log
        # is older than in the last run's would keep the last run's state (the store refuses older writes).
        store.delete(online.namespace, users)
        written = online.materialize(log)
        now = datetime.now(UTC).replace(microsecond=0)
        candidates = _recent_users(log, limit=_CANDIDATES)
        rows = online.get(candidates, at_ms=int(now.timestamp() * 1000))
    predictor = load_predictor(f"models:/{MODEL_NAME}/production")
    scored: list[UserScore] = []
    for user, row in zip(candidates, rows, strict=True):
        if row is not None and row["txn_count_1h"] > 0:
            score = cast(float, predictor.predict_one({**row, **EXAMPLE_TRANSACTION})["score"])
            scored.append(UserScore(user, _windowed(row), score))
    return OnlinePath(
        store_url=redact_url(store_url),
        entities=written.entities,
        stale=len(written.stale),
        as_of=now,
        example=dict(EXAMPLE_TRANSACTION),
        users=_spread(scored, shown),
    )


def _recent_users(log: pa.Table, *, limit: int) -> list[str]:
    """Users with an event in the log's last hour, the most active first (ties by id)."""
    ms = log[_TIME].cast(pa.int64())
    recent = log.filter(pc.greater_equal(ms, pc.max(ms).as_py() - 3_600_000))
    counts = recent.group_by(_KEY).aggregate([([], "count_all")])
    counts = counts.sort_by([("count_all", "descending"), (_KEY, "ascending")])
    return [str(u) for u in counts[_KEY].to_pylist()[:limit]]


def _windowed(row: Mapping[str, float]) -> dict[str, float]:
    return {f.name: row[f.name] for f in FRAUD_FEATURES.windowed if f.name in row}


def _spread(scored: list[UserScore], n: int) -> list[UserScore]:
    """Up to ``n`` users with different printed scores, from the highest to the lowest, evenly apart."""
    by_score: dict[float, UserScore] = {}
    for u in scored:
        by_score.setdefault(round(u.score, 4), u)
    ranked = [by_score[s] for s in sorted(by_score, reverse=True)]
    if len(ranked) <= n:
        return ranked
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)] if n > 1 else ranked[:1]
