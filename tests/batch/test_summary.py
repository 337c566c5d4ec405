"""The summary's quantiles are real ones - within 2e-5 of ``np.quantile`` over the written scores, resumed
fragments and worker processes included - and its rows/s counts only the rows this run scored."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fourfold.batch import BatchSummary, run_batch
from fourfold.batch.histogram import ScoreHistogram
from midway import kill_midway

WriteUsers = Callable[..., pa.Table]
QS = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def _assert_quantiles(summary: BatchSummary, out: Path) -> None:
    scores = pq.read_table(out, columns=["score"])["score"].to_numpy()
    assert len(scores) == summary.rows_out
    for name, q in QS.items():
        assert abs(summary.score_quantiles[name] - np.quantile(scores, q)) <= 2e-5, name


def test_quantiles_are_numpys_within_2e_5(model_uri: str, tmp_path: Path, write_users: WriteUsers) -> None:
    for i in range(4):
        write_users(tmp_path / "in" / f"part-{i}.parquet", 2_000, seed=i, bad_every=97)
    one = run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "one"),
                    id_cols=("user_id",), batch_rows=300)  # fmt: skip
    _assert_quantiles(one, tmp_path / "one")
    assert json.loads((tmp_path / "one" / "_SUCCESS").read_text())["score_quantiles"] == one.score_quantiles
    many = run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "many"),
                     id_cols=("user_id",), workers=2)  # fmt: skip
    assert many.score_quantiles == one.score_quantiles  # merged across processes: the same counts


def test_the_histogram_on_skewed_scores_and_its_round_trip() -> None:
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.beta(0.2, 30.0, 40_000), rng.beta(5.0, 1.0, 400), [0.0, 1.0, np.nan]])
    h = ScoreHistogram()
    for part in np.array_split(scores, 7):
        h.add(part)
    finite = scores[~np.isnan(scores)]
    for q in (0.0, 0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0):
        assert abs(h.quantile(q) - np.quantile(finite, q)) <= 2e-5, q
    assert ScoreHistogram.from_json(json.loads(json.dumps(h.to_json()))) == h
    assert ScoreHistogram().quantiles() == {}


def test_a_resumed_run_counts_only_its_own_rows_per_second(
    model_uri: str, tmp_path: Path, write_users: WriteUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        write_users(tmp_path / "in" / f"part-{i}.parquet", 400, seed=i)
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"),
                          "output": str(tmp_path / "out"), "id_cols": ("user_id",), "batch_rows": 400,
                          "threads": 1}  # fmt: skip
    kill_midway(kw, monkeypatch)
    summary = run_batch(**kw, resume=True)
    assert (summary.resumed, summary.rows_resumed, summary.rows_in) == (1, 400, 1_200)
    assert summary.rows_per_s == pytest.approx(800 / summary.seconds)
    assert "(3 fragments, 1 resumed (400 rows))" in summary.render()
    _assert_quantiles(summary, tmp_path / "out")  # the resumed fragment's scores are in them
