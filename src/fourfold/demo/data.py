"""Synthetic card-transaction event log for the fraud demo.

Legitimate traffic: each user has an activity level, a usual spend (lognormal with a user-specific
mean), a home device and a small pool of regular merchants; times follow a daily cycle, and some
purchases are followed minutes later by another one (so short bursts alone do not mean fraud).

Fraud: episodes in which a compromised card makes several transactions within a few minutes, for
amounts far above that user's usual (sometimes after a tiny "card test"), at unfamiliar merchants,
often in risky categories and on the web; a fifth of episodes are stealthier (usual amounts,
slower). Fraud is thus visible in the user's recent history (counts in the last minutes, amount
relative to the user's mean) far more than in any one raw column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["CATEGORIES", "DEVICES", "SCHEMA", "generate_transactions", "write_transactions"]

CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurant",
    "fuel",
    "transport",
    "pharmacy",
    "apparel",
    "entertainment",
    "travel",
    "electronics",
    "gift_cards",
    "online_marketplace",
    "money_transfer",
)
DEVICES: tuple[str, ...] = ("web", "ios", "android", "pos")

SCHEMA = pa.schema(
    [
        ("event_id", pa.int64()),
        ("user_id", pa.string()),
        ("merchant_id", pa.string()),
        ("merchant_category", pa.int8()),
        ("device", pa.int8()),
        ("amount", pa.float64()),
        ("event_time", pa.timestamp("ms", tz="UTC")),
        ("is_fraud", pa.int8()),
    ]
)

_DEFAULT_START = datetime(2025, 4, 8, tzinfo=UTC)
_MINUTE_MS = 60_000
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS
_RISKY = np.array([8, 9, 10, 11])
# Legitimate merchants are mostly everyday categories; risky ones exist but are rarer.
_CATEGORY_WEIGHTS = np.array([18, 16, 9, 8, 6, 9, 7, 4, 5, 2, 12, 4], dtype=np.float64)
_CATEGORY_LOG_SHIFT = np.array([0.0, -0.2, 0.1, -0.6, -0.4, 0.4, 0.0, 1.2, 1.0, 0.3, 0.2, 0.8])
_HOUR_WEIGHTS = np.array(
    [2, 1, 1, 1, 1, 2, 4, 6, 8, 8, 9, 10, 12, 11, 9, 9, 10, 11, 13, 13, 11, 8, 5, 3], dtype=np.float64
)
_POOL_SIZE = 24


def generate_transactions(
    n_events: int = 1_000_000,
    *,
    n_users: int | None = None,
    n_merchants: int = 5_000,
    days: int = 7,
    seed: int = 0,
    start: datetime = _DEFAULT_START,
    fraud_rate: float = 0.01,
) -> pa.Table:
    """Generate ``n_events`` synthetic card transactions sorted by ``event_time``.

    ``n_users`` defaults to ``n_events // 50``; ``fraud_rate`` is the target share of fraudulent
    events (the actual share is a little lower: only whole episodes are injected). The same
    arguments always give the same table.

    >>> table = generate_transactions(10_000, seed=1)
    >>> table.num_rows, table.schema == SCHEMA
    (10000, True)
    """
    if n_events < 1:
        raise ValueError(f"n_events must be >= 1, got {n_events}")
    if n_users is None:
        n_users = max(1, n_events // 50)
    if n_users < 1 or n_merchants < 1 or days < 1:
        raise ValueError("n_users, n_merchants and days must all be >= 1")
    if not 0.0 <= fraud_rate < 0.5:
        raise ValueError(f"fraud_rate must be in [0, 0.5), got {fraud_rate}")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    rng = np.random.default_rng(seed)
    span_ms = days * _DAY_MS

    # Users and merchants.
    activity = rng.gamma(2.0, 1.0, n_users)
    user_p = activity / activity.sum()
    user_mu = rng.normal(3.4, 1.0, n_users)
    user_sigma = rng.uniform(0.35, 0.7, n_users)
    user_device = rng.choice(4, size=n_users, p=[0.2, 0.3, 0.3, 0.2])
    user_pool = rng.integers(0, n_merchants, n_users)
    merchant_cat = rng.choice(
        len(CATEGORIES), size=n_merchants, p=_CATEGORY_WEIGHTS / _CATEGORY_WEIGHTS.sum()
    )
    merchant_p = 1.0 / np.arange(1, n_merchants + 1) ** 0.8
    merchant_p = rng.permutation(merchant_p / merchant_p.sum())

    # Fraud episodes: whole episodes of 2..12 events until the target count is reached.
    target = round(fraud_rate * n_events)
    lengths = np.minimum(2 + rng.poisson(3.0, size=target // 2 + 1), 12)
    n_episodes = int(np.searchsorted(np.cumsum(lengths), target, side="right"))
    lengths = lengths[:n_episodes]
    n_fraud = int(lengths.sum())
    n_normal = n_events - n_fraud

    # Legitimate events: a base set spread over the days, plus follow-ups minutes after a base event.
    n_follow = int(0.12 * n_normal) if n_normal > 1 else 0
    n_base = n_normal - n_follow
    base_user = rng.choice(n_users, size=n_base, p=user_p)
    base_t = (
        rng.integers(0, days, n_base) * _DAY_MS
        + rng.choice(24, size=n_base, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()) * _HOUR_MS
        + rng.integers(0, _HOUR_MS, n_base)
    )
    parent = rng.integers(0, max(n_base, 1), n_follow)
    follow_gap = (rng.exponential(4 * _MINUTE_MS, n_follow) + 20_000).astype(np.int64)
    normal_user = np.concatenate([base_user, base_user[parent]])
    normal_t = np.minimum(np.concatenate([base_t, base_t[parent] + follow_gap]), span_ms - 1)
    in_pool = rng.random(n_normal) < 0.85
    normal_merchant = np.where(
        in_pool,
        (user_pool[normal_user] + rng.integers(0, _POOL_SIZE, n_normal)) % n_merchants,
        rng.choice(n_merchants, size=n_normal, p=merchant_p),
    )
    normal_cat = merchant_cat[normal_merchant]
    log_amount = (
        user_mu[normal_user]
        + _CATEGORY_LOG_SHIFT[normal_cat]
        + user_sigma[normal_user] * rng.standard_normal(n_normal)
    )
    # A few legitimate big-ticket purchases keep "large amount" from meaning fraud on its own.
    log_amount += np.where(rng.random(n_normal) < 0.03, np.log(rng.uniform(3.0, 12.0, n_normal)), 0.0)
    normal_amount = np.exp(log_amount)
    normal_device = np.where(
        rng.random(n_normal) < 0.85, user_device[normal_user], rng.integers(0, 4, n_normal)
    )

    # Fraud events: a burst per episode, gaps of tens of seconds, on a victim card.
    victim = rng.choice(n_users, size=n_episodes, p=user_p)
    ep_start = rng.integers(0, max(span_ms - 30 * _MINUTE_MS, 1), n_episodes)
    ep_of = np.repeat(np.arange(n_episodes), lengths)
    first = np.cumsum(lengths) - lengths
    # Some episodes are stealthy (usual amounts, slower, on the card's own device): they keep the
    # task from being trivially separable, as in real fraud.
    stealth = (rng.random(n_episodes) < 0.2)[ep_of]
    gaps = (rng.exponential(np.where(stealth, 300_000, 40_000)) + 2_000).astype(np.int64)
    is_first = np.zeros(n_fraud, dtype=bool)
    is_first[first] = True
    gaps[is_first] = 0
    csum = np.cumsum(gaps)
    fraud_t = np.minimum(ep_start[ep_of] + csum - csum[first[ep_of]], span_ms - 1)
    fraud_user = victim[ep_of]
    fraud_amount = np.exp(
        user_mu[fraud_user]
        + 0.5 * user_sigma[fraud_user] * rng.standard_normal(n_fraud)
        + np.log(np.where(stealth, rng.uniform(0.7, 2.0, n_fraud), rng.uniform(3.0, 25.0, n_fraud)))
    )
    card_test = is_first & ~stealth & (rng.random(n_fraud) < 0.35)
    fraud_amount = np.where(card_test, rng.uniform(0.5, 2.0, n_fraud), fraud_amount)
    risky_merchants = np.flatnonzero(np.isin(merchant_cat, _RISKY))
    if risky_merchants.size == 0:
        risky_merchants = np.arange(n_merchants)
    fraud_merchant = np.where(
        (rng.random(n_fraud) < 0.5) & ~stealth,
        risky_merchants[rng.integers(0, risky_merchants.size, n_fraud)],
        rng.integers(0, n_merchants, n_fraud),
    )
    fraud_device = np.where(
        stealth, user_device[fraud_user], np.where(rng.random(n_fraud) < 0.4, 0, rng.integers(0, 4, n_fraud))
    )

    user = np.concatenate([normal_user, fraud_user])
    t = np.concatenate([normal_t, fraud_t]).astype(np.int64)
    merchant = np.concatenate([normal_merchant, fraud_merchant])
    amount = np.round(np.concatenate([normal_amount, fraud_amount]), 2).clip(0.01)
    device = np.concatenate([normal_device, fraud_device])
    fraud = np.concatenate([np.zeros(n_normal, np.int8), np.ones(n_fraud, np.int8)])
    order = np.lexsort((user, t))

    start_ms = round(start.timestamp() * 1000)
    user_names = pa.array([f"u{i:06d}" for i in range(n_users)], pa.string())
    merchant_names = pa.array([f"m{i:05d}" for i in range(n_merchants)], pa.string())
    columns: dict[str, Any] = {
        "event_id": pa.array(np.arange(1, n_events + 1, dtype=np.int64)),
        "user_id": user_names.take(pa.array(user[order])),
        "merchant_id": merchant_names.take(pa.array(merchant[order])),
        "merchant_category": pa.array(merchant_cat[merchant[order]].astype(np.int8)),
        "device": pa.array(device[order].astype(np.int8)),
        "amount": pa.array(amount[order]),
        "event_time": pa.array(t[order] + start_ms, pa.timestamp("ms", tz="UTC")),
        "is_fraud": pa.array(fraud[order]),
    }
    return pa.table(columns, schema=SCHEMA)


def write_transactions(
    path: str | Path,
    *,
    n_events: int = 1_000_000,
    n_users: int | None = None,
    n_merchants: int = 5_000,
    days: int = 7,
    seed: int = 0,
    start: datetime = _DEFAULT_START,
    fraud_rate: float = 0.01,
) -> Path:
    """Write ``generate_transactions(...)`` with the same arguments to a zstd parquet file.

    >>> write_transactions("/tmp/tx.parquet", n_events=1_000, seed=3)
    PosixPath('/tmp/tx.parquet')
    """
    table = generate_transactions(
        n_events,
        n_users=n_users,
        n_merchants=n_merchants,
        days=days,
        seed=seed,
        start=start,
        fraud_rate=fraud_rate,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path
