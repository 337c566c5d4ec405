"""A batch job for a model with windowed features computes them point-in-time from the event log - the
same values the offline engine gives - and quarantines rows it cannot place in time."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import fourfold.batch.windowed
import fourfold.demo.features
from fourfold import FourfoldError, LocalRegistry, load_predictor, save_model
from fourfold.batch import run_batch
from fourfold.batch.sources import Source
from fourfold.demo.data import generate_transactions
from fourfold.demo.features import FEATURES, FRAUD_FEATURES, featurize
from fourfold.demo.train import train_fraud_model
from fourfold.errors import ComputedFieldError, InputError
from fourfold.features.events import single_source
from fourfold.features.offline import PointInTime, point_in_time_join
from fourfold.model.signature import Feature, Signature

WINDOWED = [f.name for f in FRAUD_FEATURES.windowed]
FRAUD_FEATURES_PATH = Path(fourfold.demo.features.__file__).with_name("fraud_features.yaml")
KEY, TS = single_source(FRAUD_FEATURES)


@pytest.fixture(scope="module")
def log() -> pa.Table:
    return generate_transactions(6_000, seed=5)


@pytest.fixture
def fraud_uri(tmp_path: Path, log: pa.Table) -> str:
    result = train_fraud_model(featurize(log), n_estimators=10, max_depth=3)
    missing_ok = {f.name for f in FRAUD_FEATURES.windowed if f.agg in ("mean", "max", "last")}
    sig = Signature.for_task("binary", [Feature(f, nullable=f in missing_ok) for f in FEATURES])
    pkg = save_model(result.model, tmp_path / "pkg", name="fraud", signature=sig, sample=result.sample,
                     features=FRAUD_FEATURES)  # fmt: skip
    LocalRegistry().register(pkg, name="fraud", aliases=["production"])
    return "models:/fraud/production"


def _rows(log: pa.Table) -> pa.Table:
    """Rows to score: later transactions without their history features (the job must compute them)."""
    rows = log.slice(4_000, 1_500)
    return rows.drop_columns([c for c in WINDOWED if c in rows.column_names])


def test_windowed_features_are_computed_point_in_time_from_the_log(
    fraud_uri: str, log: pa.Table, tmp_path: Path
) -> None:
    history = log.slice(0, 4_000)
    pq.write_table(history, tmp_path / "events.parquet")
    rows = _rows(log)
    (tmp_path / "in").mkdir()
    pq.write_table(rows.slice(0, 700), tmp_path / "in" / "a.parquet")
    pq.write_table(rows.slice(700), tmp_path / "in" / "b.parquet")

    summary = run_batch(model=fraud_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                        id_cols=("event_id",), events=str(tmp_path / "events.parquet"),
                        batch_rows=256)  # fmt: skip
    assert summary.rows_out == rows.num_rows
    assert summary.rejected == 0

    expected = point_in_time_join(rows.select(["event_id", KEY, TS]), history, FRAUD_FEATURES)
    for name in FEATURES:  # request features come from the rows themselves
        if name not in WINDOWED:
            expected = expected.set_column(expected.schema.get_field_index(name), name, rows[name])
    want = load_predictor(fraud_uri).predict(expected)["score"]
    got = pq.read_table(tmp_path / "out").sort_by("event_id")
    order = np.argsort(expected["event_id"].to_numpy())
    np.testing.assert_allclose(got["score"].to_numpy(), np.asarray(want)[order], atol=1e-6)


def test_one_as_of_time_and_rows_without_a_key_are_quarantined(
    fraud_uri: str, log: pa.Table, tmp_path: Path
) -> None:
    pq.write_table(log, tmp_path / "events.parquet")
    rows = _rows(log).slice(0, 300)
    users = rows[KEY].to_pylist()
    users[7] = None
    rows = rows.set_column(rows.schema.get_field_index(KEY), KEY, pa.array(users, pa.string()))
    pq.write_table(rows, tmp_path / "rows.parquet")
    as_of = "2025-01-10T00:00:00Z"
    summary = run_batch(model=fraud_uri, input=str(tmp_path / "rows.parquet"), output=str(tmp_path / "out"),
                        id_cols=("event_id",), events=str(tmp_path / "events.parquet"),
                        as_of=as_of)  # fmt: skip
    assert (summary.rows_out, summary.rejected) == (299, 1)
    bad = pq.read_table(tmp_path / "out" / "_quarantine")
    assert bad["_reason"].to_pylist() == [f"missing {KEY!r}"]

    good = rows.filter(pc.is_valid(rows[KEY]))
    probe = good.select(["event_id", KEY]).append_column(
        "as_of", pa.array(np.full(good.num_rows, 1_736_467_200_000), pa.int64())
    )
    expected = point_in_time_join(probe, log, FRAUD_FEATURES, timestamp="as_of")
    for name in FEATURES:
        if name not in WINDOWED:
            expected = expected.append_column(name, good[name]) if name not in expected.column_names else (
                expected.set_column(expected.schema.get_field_index(name), name, good[name]))  # fmt: skip
    want = np.asarray(load_predictor(fraud_uri).predict(expected)["score"])
    got = pq.read_table(tmp_path / "out").sort_by("event_id")
    np.testing.assert_allclose(
        got["score"].to_numpy(), want[np.argsort(good["event_id"].to_numpy())], atol=1e-6
    )


def test_windowed_model_without_events_names_what_is_missing(
    fraud_uri: str, log: pa.Table, tmp_path: Path
) -> None:
    pq.write_table(_rows(log), tmp_path / "rows.parquet")
    with pytest.raises(FourfoldError, match="pass --events LOG"):
        run_batch(model=fraud_uri, input=str(tmp_path / "rows.parquet"), output=str(tmp_path / "out"))


def test_a_features_file_replaces_the_packages_and_a_bad_one_is_named(
    fraud_uri: str, log: pa.Table, tmp_path: Path
) -> None:
    """--features: the windows come from the given definition (here: 1h windows stretched to 7d, so the
    scores differ from the package's definition), and an unreadable file is a 400 naming it."""
    pq.write_table(log.slice(0, 4_000), tmp_path / "events.parquet")
    pq.write_table(_rows(log).slice(0, 200), tmp_path / "rows.parquet")
    kw = {"model": fraud_uri, "input": str(tmp_path / "rows.parquet"), "id_cols": ("event_id",),
          "events": str(tmp_path / "events.parquet")}  # fmt: skip
    run_batch(**kw, output=str(tmp_path / "a"))
    text = FRAUD_FEATURES_PATH.read_text().replace("window: 1h", "window: 7d")
    (tmp_path / "wide.yaml").write_text(text)
    run_batch(**kw, output=str(tmp_path / "b"), features=str(tmp_path / "wide.yaml"))
    a, b = (
        pq.read_table(tmp_path / "a")["score"].to_numpy(),
        pq.read_table(tmp_path / "b")["score"].to_numpy(),
    )
    assert not np.allclose(a, b)
    (tmp_path / "bad.yaml").write_text("name: [")
    with pytest.raises(FourfoldError, match="--features") as err:
        run_batch(**kw, output=str(tmp_path / "c"), features=str(tmp_path / "bad.yaml"))
    assert err.value.status == 400


def test_an_input_column_named_like_a_computed_feature_is_refused(
    fraud_uri: str, log: pa.Table, tmp_path: Path
) -> None:
    """With --events fourfold computes the windowed features: an input column of that name is refused
    before anything is staged (it used to be silently replaced); without --events it is scored."""
    pq.write_table(log.slice(0, 4_000), tmp_path / "events.parquet")
    rows = _rows(log).slice(0, 200)
    rows = rows.append_column("txn_count_10m", pa.array(np.full(rows.num_rows, 99.0)))
    pq.write_table(rows, tmp_path / "rows.parquet")
    kw = {"model": fraud_uri, "input": str(tmp_path / "rows.parquet"), "id_cols": ("event_id",)}
    with pytest.raises(ComputedFieldError) as err:
        run_batch(**kw, output=str(tmp_path / "out"), events=str(tmp_path / "events.parquet"))
    assert err.value.status == 422
    assert "must not carry 'txn_count_10m'" in err.value.message
    assert "drop the column, or run without --events to score the input's own values" in err.value.message
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".staging-*"))

    full = log.slice(4_000, 200)  # every feature as an input column: without --events, its own values
    full = full.append_column("txn_count_10m", pa.array(np.full(full.num_rows, 99.0)))
    for name in WINDOWED[1:]:
        full = full.append_column(name, pa.array(np.ones(full.num_rows)))
    pq.write_table(full, tmp_path / "full.parquet")
    summary = run_batch(**{**kw, "input": str(tmp_path / "full.parquet")}, output=str(tmp_path / "own"))
    assert summary.rows_out == 200
    want = load_predictor(fraud_uri).predict(full)["score"]
    got = pq.read_table(tmp_path / "own")
    np.testing.assert_allclose(got["score"].to_numpy(), want, atol=1e-6)


def test_worker_processes_load_the_saved_index_and_never_read_the_log(
    fraud_uri: str, log: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """workers > 1: the job reads and indexes the log once and the spawned workers map the saved
    index - the log is deleted right after the job's one read, so a worker that read it would fail - and
    their scores equal the single process's."""
    events = tmp_path / "events.parquet"
    pq.write_table(log.slice(0, 4_000), events)
    rows = _rows(log)
    (tmp_path / "in").mkdir()
    for i in range(4):
        pq.write_table(rows.slice(i * 375, 375), tmp_path / "in" / f"part-{i}.parquet")
    kw = {"model": fraud_uri, "input": str(tmp_path / "in"), "id_cols": ("event_id",), "events": str(events),
          "batch_rows": 128}  # fmt: skip
    single = run_batch(**kw, output=str(tmp_path / "one"))

    reads: list[str] = []
    real = fourfold.batch.windowed.read_log

    def read_then_delete(source: Source) -> pa.Table:
        reads.append(source.spec)
        table = real(source)
        for frag in source.fragments:
            os.unlink(frag.path)
        return table

    monkeypatch.setattr(fourfold.batch.windowed, "read_log", read_then_delete)
    multi = run_batch(**kw, output=str(tmp_path / "many"), workers=2)
    assert reads == [str(events)]
    assert not events.exists()
    assert (multi.rows_in, multi.rows_out, multi.rejected) == (
        single.rows_in,
        single.rows_out,
        single.rejected,
    )
    a = pq.read_table(tmp_path / "one").sort_by("event_id")
    b = pq.read_table(tmp_path / "many").sort_by("event_id")
    assert b["event_id"].to_pylist() == a["event_id"].to_pylist()
    np.testing.assert_array_equal(b["score"].to_numpy(), a["score"].to_numpy())
    assert not (tmp_path / "many" / "_pit").exists()  # bookkeeping: not published


def test_a_saved_point_in_time_index_gives_the_same_features(log: pa.Table, tmp_path: Path) -> None:
    history = log.slice(0, 4_000)
    pit = PointInTime(history, FRAUD_FEATURES)
    pit.save(tmp_path / "pit")
    loaded = PointInTime.load(tmp_path / "pit", FRAUD_FEATURES)
    probe = log.slice(3_000, 2_000)
    ts = probe[TS].cast(pa.int64()).to_numpy()
    keys = pa.concat_arrays([*probe[KEY].chunks, pa.array(["nobody"])])
    ts = np.concatenate([ts, [ts[0]]])
    want, got = pit.at(keys, ts), loaded.at(keys, ts)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert isinstance(loaded._comp, np.memmap)  # mapped, not read into each process
    other = FRAUD_FEATURES_PATH.read_text().replace("window: 1h", "window: 2h")
    (tmp_path / "other.yaml").write_text(other)
    from fourfold.features.definitions import FeatureSet

    with pytest.raises(InputError, match="built for other windowed features"):
        PointInTime.load(tmp_path / "pit", FeatureSet.load(tmp_path / "other.yaml"))
