"""``fourfold batch`` fails with one line - ``error: ...`` on stderr, exit 1 - never a traceback, and
leaves nothing behind: no output, no ``.staging-*`` directory (unless it holds work a resume reuses)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FEATURES
from fourfold.batch import run_batch
from fourfold.errors import InputError, RequestError

WriteUsers = Callable[..., pa.Table]


def _cli(model_uri: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``fourfold batch`` as a scheduler runs it: its own process, the real console entry point."""
    import os

    cmd = [sys.executable, "-c", "from fourfold.cli.main import main; main()", "batch", model_uri, *args]
    env = {**os.environ, "FOURFOLD_HOME": str(home)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _one_line_error(r: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _corrupt_a_data_page(path: Path) -> None:
    """Overwrite the header of a data page in the middle of the file: the footer stays valid (the schema
    and row counts read fine), the second row group's column chunk cannot be decoded."""
    meta = pq.ParquetFile(path).metadata
    chunk = meta.row_group(1).column(3)
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset : chunk.data_page_offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def test_a_corrupt_data_page_is_one_line_and_leaves_nothing(
    model_uri: str, tmp_path: Path, fourfold_home: Path
) -> None:
    rng = np.random.default_rng(0)
    n = 2_000
    table = pa.table(
        {"user_id": [f"u{i}" for i in range(n)], **{f: rng.standard_normal(n) for f in FEATURES}}
    )
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "a.parquet"
    pq.write_table(table, path, row_group_size=1_000, use_dictionary=False)
    _corrupt_a_data_page(path)
    assert pq.ParquetFile(path).metadata.num_rows == n  # the footer still reads

    with pytest.raises(InputError, match=r"cannot read batch input file .*a\.parquet: .*page header"):
        run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                  id_cols=("user_id",), batch_rows=500)  # fmt: skip
    r = _cli(model_uri, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--id-cols", "user_id",
             "--batch-rows", "500", home=fourfold_home)  # fmt: skip
    _one_line_error(r, "cannot read batch input file", "a.parquet")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".staging-*"))


def test_an_output_below_a_regular_file_is_one_line(
    model_uri: str, tmp_path: Path, write_users: WriteUsers, fourfold_home: Path
) -> None:
    """An output that cannot be created (its parent is a file - true for root too, unlike a chmod)."""
    write_users(tmp_path / "in" / "a.parquet")
    (tmp_path / "file.txt").write_text("a file")
    with pytest.raises(RequestError, match=r"cannot create the staging directory .*a parent of it is a file"):
        run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "file.txt" / "out"))
    r = _cli(model_uri, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "file.txt" / "scores"),
             home=fourfold_home)  # fmt: skip
    _one_line_error(r, "cannot create the staging directory")
    assert (tmp_path / "file.txt").read_text() == "a file"


def test_dot_as_the_output_is_one_line(
    model_uri: str, tmp_path: Path, write_users: WriteUsers, fourfold_home: Path
) -> None:
    write_users(tmp_path / "in" / "a.parquet")
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path / "in")
    try:
        r = _cli(model_uri, "-i", ".", "-o", ".", "--id-cols", "user_id", home=fourfold_home)
    finally:
        os.chdir(cwd)
    _one_line_error(r, "is the current directory or one of its parents")
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.parquet"]
    assert not list(tmp_path.glob(".staging-*"))


def test_a_failed_column_check_leaves_no_staging_directory(
    model_uri: str, tmp_path: Path, write_users: WriteUsers
) -> None:
    data = write_users(tmp_path / "in" / "a.parquet")
    pq.write_table(data.drop_columns(["x3"]), tmp_path / "in" / "a.parquet")
    with pytest.raises(InputError, match="lacks column"):
        run_batch(model=model_uri, input=str(tmp_path / "in"), output=str(tmp_path / "out" / "day"))
    assert not (tmp_path / "out").exists()  # not even the parent it would have made

    import duckdb  # a SQL input is spooled into the staging directory first: checked, then removed

    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    try:
        con.register("data", data.drop_columns(["x3"]))
        con.execute("CREATE TABLE users AS SELECT * FROM data")
    finally:
        con.close()
    with pytest.raises(InputError, match="lacks column"):
        run_batch(model=model_uri, input=f"duckdb://{db}", query="SELECT * FROM users",
                  output=str(tmp_path / "sql-out"))  # fmt: skip
    assert not list(tmp_path.glob(".staging-*"))
    assert not (tmp_path / "sql-out").exists()
