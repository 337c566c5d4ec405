"""A missing column is named with what the input needs; "pass --events" only when the missing columns
are windowed features and no --events was given; a features file that does not exist says so."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fourfold import LocalRegistry, save_model
from fourfold.batch import run_batch
from fourfold.cli.main import app
from fourfold.demo.data import generate_transactions
from fourfold.demo.features import FEATURES, FRAUD_FEATURES, featurize
from fourfold.demo.train import train_fraud_model
from fourfold.errors import InputError, NotFoundError
from fourfold.model.signature import Feature, Signature

WINDOWED = [f.name for f in FRAUD_FEATURES.windowed]


@pytest.fixture
def fraud(tmp_path: Path) -> tuple[str, pa.Table]:
    log = generate_transactions(3_000, seed=2)
    result = train_fraud_model(featurize(log), n_estimators=5, max_depth=3)
    sig = Signature.for_task("binary", [Feature(f, nullable=True) for f in FEATURES])
    pkg = save_model(result.model, tmp_path / "pkg", name="fraud", signature=sig, sample=result.sample,
                     features=FRAUD_FEATURES)  # fmt: skip
    LocalRegistry().register(pkg, name="fraud", aliases=["production"])
    pq.write_table(log, tmp_path / "events.parquet")
    return "models:/fraud/production", log


def _fails(tmp_path: Path, table: pa.Table, **kw: object) -> str:
    pq.write_table(table, tmp_path / "rows.parquet")
    with pytest.raises(InputError) as err:
        run_batch(input=str(tmp_path / "rows.parquet"), output=str(tmp_path / "out"), **kw)  # type: ignore[arg-type]
    assert not list(tmp_path.glob(".staging-*"))
    return err.value.message


def test_missing_windowed_columns_without_events_say_pass_events(
    fraud: tuple[str, pa.Table], tmp_path: Path
) -> None:
    uri, log = fraud
    message = _fails(tmp_path, log.slice(0, 50), model=uri)
    assert "lacks column(s) 'txn_count_10m'" in message
    assert "pass --events LOG" in message


def test_a_missing_request_column_is_named_without_an_events_hint(
    fraud: tuple[str, pa.Table], tmp_path: Path
) -> None:
    uri, log = fraud
    rows = featurize(log.slice(0, 50)).drop_columns(["amount"])  # every windowed feature, no amount
    message = _fails(tmp_path, rows, model=uri, id_cols=("event_id",))
    assert "lacks column(s) 'amount'; it needs: event_id, amount, merchant_category, device, " in message
    assert "--events" not in message

    message = _fails(tmp_path, log.slice(0, 50).drop_columns(["user_id"]), model=uri, id_cols=("event_id",),
                     events=str(tmp_path / "events.parquet"))  # fmt: skip
    assert "lacks column(s) 'user_id'; it needs: event_id, user_id, event_time, amount," in message
    assert "'user_id' is the entity key the windowed features are computed for" in message
    assert "pass --events" not in message


def test_a_missing_column_of_a_plain_model_lists_what_the_input_needs(model_uri: str, tmp_path: Path) -> None:
    rows = pa.table({"user_id": ["a"], "x0": [1.0], "x1": [1.0], "x2": [1.0], "x4": [1.0]})
    message = _fails(tmp_path, rows, model=model_uri, id_cols=("user_id",))
    assert message.startswith("the batch input lacks column(s) 'x3'; it needs: user_id, x0, x1, x2, x3, x4")
    assert "(it has: user_id, x0, x1, x2, x4)" in message
    assert "--events" not in message


def test_features_compute_with_a_missing_yaml_says_the_file_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    args = ["--log", str(tmp_path / "log.parquet"), "--out", str(tmp_path / "o.parquet")]
    r = CliRunner().invoke(app, ["features", "compute", "-f", str(missing), *args])
    assert isinstance(r.exception, NotFoundError)  # main() prints it as one line and exits 1
    assert r.exception.message.startswith(f"features file {missing} does not exist")
    assert "model package" not in r.exception.message
