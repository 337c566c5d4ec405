from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fourfold.features import offline
from fourfold.features.agreement import engines_agree
from pit import feature_set


def _log() -> pa.Table:
    rng = np.random.default_rng(5)
    n = 3000
    return pa.table(
        {
            "user_id": rng.choice([f"u{i}" for i in range(60)], n),
            "ts": np.sort(rng.integers(0, 9000, n)) - rng.integers(0, 90, n) * (rng.random(n) < 0.2),
            "amount": rng.lognormal(1, 1, n),
            "merchant": rng.choice(["a", "b", "c"], n),
        }
    )


def test_engines_agree_on_all_keys_and_on_a_sample_of_keys() -> None:
    fs = feature_set("60ms")
    whole = engines_agree(_log(), fs)
    assert whole.agree
    assert whole.events == 3000
    assert whole.values > 15_000
    part = engines_agree(_log(), fs, fraction=0.3)
    assert part.agree
    assert 0 < part.events < 3000
    assert "engines agree" in part.summary()


def test_a_broken_engine_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = offline.compute_features

    def off_by_one(log: pa.Table, fs: object, **kw: object) -> pa.Table:
        table = real(log, fs, **kw)  # type: ignore[arg-type]
        i = table.schema.get_field_index("n_100")
        return table.set_column(i, "n_100", pa.array(table["n_100"].to_numpy() + 1))

    monkeypatch.setattr("fourfold.features.agreement.compute_features", off_by_one)
    report = engines_agree(_log(), feature_set("60ms"))
    assert not report.agree
    assert report.mismatches > 1000
    assert "DISAGREE" in report.summary()
