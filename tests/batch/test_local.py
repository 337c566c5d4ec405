from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import FEATURES
from fourfold import load_predictor, save_model
from fourfold.batch import JobFailed, run_batch
from fourfold.cli.main import app

ROWS_PER_FILE = 400


def _write_input(root: Path, files: int, bad_every: int = 0, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    tables = []
    for i in range(files):
        n = ROWS_PER_FILE
        cols: dict[str, object] = {"user_id": [f"u{i:03d}-{j:04d}" for j in range(n)]}
        for f in FEATURES:
            values = rng.standard_normal(n)
            cols[f] = values
        t = pa.table(cols)
        if bad_every:
            uid = t["user_id"].to_pylist()
            x1 = t["x1"].to_numpy().copy()
            for j in range(0, n, bad_every):
                if (j // bad_every) % 2:
                    uid[j] = None
                else:
                    x1[j] = np.nan
            t = t.set_column(0, "user_id", pa.array(uid, pa.string())).set_column(2, "x1", pa.array(x1))
        pq.write_table(t, root / f"part-{i:03d}.parquet")
        tables.append(t)
    return pa.concat_tables(tables)


def _read(dest: Path) -> pa.Table:
    return pq.read_table(sorted(dest.glob("part-*.parquet"))).sort_by("user_id")


def test_scores_equal_the_predictor_and_bad_rows_are_quarantined(model_uri: str, tmp_path: Path) -> None:
    data = _write_input(tmp_path / "in", files=3, bad_every=50)
    summary = run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                        id_cols=("user_id",), partition="date=2025-04-15", workers=2, batch_rows=128)  # fmt: skip  # noqa: E501
    dest = tmp_path / "out" / "date=2025-04-15"
    assert (dest / "_SUCCESS").exists()
    assert json.loads((dest / "_SUCCESS").read_text())["rows_in"] == 3 * ROWS_PER_FILE
    assert summary.rows_in == 1200
    assert summary.rejected == 24
    assert summary.rows_out == 1176
    out = _read(dest)
    good = data.filter(
        pa.compute.and_(pa.compute.is_valid(data["user_id"]), pa.compute.is_finite(data["x1"]))
    )
    good = good.sort_by("user_id")
    assert out["user_id"].to_pylist() == good["user_id"].to_pylist()
    expected = load_predictor(model_uri).predict(good)["score"]
    np.testing.assert_allclose(out["score"].to_numpy(), expected, atol=1e-6)
    assert set(out["model_version"].to_pylist()) == {"1"}
    bad = pq.read_table(sorted((dest / "_quarantine").glob("*.parquet")))
    assert bad.num_rows == 24
    assert set(bad["_reason"].to_pylist()) == {
        "missing 'user_id'",
        "feature 'x1' is null or NaN",
    }
    assert not list(tmp_path.joinpath("out").glob(".staging-*"))
    assert summary.score_quantiles


def test_rerunning_a_partition_replaces_it(model_uri: str, tmp_path: Path) -> None:
    _write_input(tmp_path / "in", files=2)
    kw = {"model": model_uri, "input": str(tmp_path / "in"), "output": str(tmp_path / "out" / "{date}"),
          "id_cols": ("user_id",), "partition": "date=2025-04-15"}  # fmt: skip
    run_batch(**kw)
    first = _read(tmp_path / "out" / "2025-04-15")
    run_batch(**kw)
    second = _read(tmp_path / "out" / "2025-04-15")
    assert second.equals(first)
    assert second.num_rows == 2 * ROWS_PER_FILE  # replaced, not appended


def test_too_many_rejected_rows_fail_and_commit_nothing(model_uri: str, tmp_path: Path) -> None:
    _write_input(tmp_path / "in", files=2, bad_every=10)
    with pytest.raises(JobFailed, match=r"over --max-rejected 0\.01; nothing was committed"):
        run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                  id_cols=("user_id",), max_rejected=0.01)  # fmt: skip
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    r = CliRunner().invoke(app, ["batch", model_uri, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o2"),
                                 "--id-cols", "user_id", "--max-rejected", "5"])  # fmt: skip
    assert r.exit_code == 3
    ok = CliRunner().invoke(app, ["batch", model_uri, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o3"),
                                  "--id-cols", "user_id"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "rows in" in ok.stdout


def test_missing_and_non_numeric_columns_are_named(model_uri: str, tmp_path: Path) -> None:
    from fourfold import FourfoldError

    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"user_id": ["a"], **{f: ["x"] for f in FEATURES}}), tmp_path / "in" / "a.parquet"
    )
    with pytest.raises(
        FourfoldError, match="input column 'x0' must be a number, got an Arrow column of type string"
    ):
        run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"))
    with pytest.raises(FourfoldError, match="lacks column"):
        run_batch(
            model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"), id_cols=("nope",)
        )


def test_kill_9_midway_then_resume_equals_an_uninterrupted_run(
    model_uri: str, tmp_path: Path, fourfold_home: Path
) -> None:
    _write_input(tmp_path / "in", files=40)
    run_batch(
        model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "whole"), id_cols=("user_id",)
    )
    expected = _read(tmp_path / "whole")

    cmd = [sys.executable, "-m", "fourfold.cli.main", "batch", model_uri, "-i", str(tmp_path / "in"),
           "-o", str(tmp_path / "out"), "--id-cols", "user_id", "--batch-rows", "50"]  # fmt: skip
    env = {**os.environ, "FOURFOLD_HOME": str(fourfold_home)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = tmp_path / ".staging-out"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(staging.glob("part-*.done"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = len(list(staging.glob("part-*.done")))
    assert 3 <= done < 40, done  # killed midway
    assert not (tmp_path / "out").exists()  # nothing half-written where readers look

    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} resumed" in resumed.stdout
    got = _read(tmp_path / "out")
    assert got.num_rows == 40 * ROWS_PER_FILE  # no lost and no duplicated rows
    assert got.equals(expected)


def test_csv_input_scores_like_parquet(model_uri: str, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv

    data = _write_input(tmp_path / "pq", files=2)
    (tmp_path / "csv").mkdir()
    for i, f in enumerate(sorted((tmp_path / "pq").glob("*.parquet"))):
        pacsv.write_csv(pq.read_table(f), tmp_path / "csv" / f"part-{i}.csv")
    run_batch(model=model_uri, input=str(tmp_path / "csv"), output=str(tmp_path / "out"),
              id_cols=("user_id",), batch_rows=100)  # fmt: skip
    out = _read(tmp_path / "out")
    expected = load_predictor(model_uri).predict(data.sort_by("user_id"))["score"]
    np.testing.assert_allclose(out["score"].to_numpy(), expected, atol=1e-6)


def test_fsspec_url_input(model_uri: str, tmp_path: Path) -> None:
    """Object stores come through fsspec; its in-memory filesystem stands in for s3:// / gs:// here."""
    import fsspec

    data = _write_input(tmp_path / "in", files=3)
    mem = fsspec.filesystem("memory")
    for f in sorted((tmp_path / "in").glob("*.parquet")):
        mem.pipe(f"/bucket/users/{f.name}", f.read_bytes())
    mem.pipe("/bucket/users/_SUCCESS", b"")  # writer markers are not data
    try:
        summary = run_batch(model=model_uri, input="memory://bucket/users", output=str(tmp_path / "out"),
                            id_cols=("user_id",))  # fmt: skip
    finally:
        mem.rm("/bucket", recursive=True)
    assert summary.fragments == 3
    out = _read(tmp_path / "out")
    expected = load_predictor(model_uri).predict(data.sort_by("user_id"))["score"]
    np.testing.assert_allclose(out["score"].to_numpy(), expected, atol=1e-6)


def test_worker_processes_and_progress_line(
    model_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_input(tmp_path / "in", files=4)
    summary = run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                        id_cols=("user_id",), workers=2, progress=True)  # fmt: skip
    assert summary.rows_out == data.num_rows
    err = capsys.readouterr().err
    assert f"scored {data.num_rows:,} / {data.num_rows:,} rows" in err
    assert "rows/s" in err


@pytest.mark.parametrize("threads", [1, 3])
def test_a_failing_model_call_stops_the_job_and_commits_nothing(
    model_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    from fourfold.model.predictor import Predictor

    _write_input(tmp_path / "in", files=3)
    calls = []
    real = Predictor.score

    def flaky(self: Predictor, x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(x))
        if len(calls) == 4:
            raise MemoryError("the model ran out of memory")
        return real(self, x)

    monkeypatch.setattr(Predictor, "score", flaky)
    with pytest.raises(MemoryError, match="ran out of memory"):
        run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                  id_cols=("user_id",), batch_rows=50, threads=threads)  # fmt: skip
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(Predictor, "score", real)
    summary = run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                        id_cols=("user_id",), batch_rows=50, threads=threads, resume=True)  # fmt: skip
    assert summary.rows_out == 3 * ROWS_PER_FILE
    assert _read(tmp_path / "out")["user_id"].to_pylist() == sorted(
        f"u{i:03d}-{j:04d}" for i in range(3) for j in range(ROWS_PER_FILE)
    )


def test_rows_keep_their_input_order_with_many_model_threads(model_uri: str, tmp_path: Path) -> None:
    data = _write_input(tmp_path / "in", files=2)
    run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"),
              id_cols=("user_id",), batch_rows=7, threads=4)  # fmt: skip
    got = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet")))
    assert got["user_id"].to_pylist() == data["user_id"].to_pylist()
    expected = load_predictor(model_uri).predict(data)["score"]
    np.testing.assert_allclose(got["score"].to_numpy(), expected, atol=1e-6)


def test_multiclass_probabilities_are_a_list_column(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    data = _write_input(tmp_path / "in", files=1)
    x = np.column_stack([data[f].to_numpy() for f in FEATURES])
    y = np.digitize(x[:, 0], [-0.5, 0.5])  # three classes
    model = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
    pkg = save_model(model, tmp_path / "pkg", name="tri", sample=data.select(FEATURES))
    run_batch(
        model=str(pkg.path), input=str(tmp_path / "in"), output=str(tmp_path / "out"), id_cols=("user_id",)
    )
    out = pq.read_table(tmp_path / "out")
    assert out.schema.field("probabilities").type == pa.list_(pa.field("element", pa.float64()))
    expected = load_predictor(str(pkg.path)).predict(data)
    np.testing.assert_allclose(
        np.array(out["probabilities"].to_pylist()), expected["probabilities"], atol=1e-9
    )
    assert out["label"].to_pylist() == expected["label"].tolist()
