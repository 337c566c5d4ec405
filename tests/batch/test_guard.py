"""A batch job never destroys what it did not write: each way an output can point at the user's files is
refused before anything is staged, with real files, and the files are all still there afterwards."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fourfold.batch import run_batch
from fourfold.cli.main import app
from fourfold.errors import ConflictError, RequestError
from fourfold.settings import Settings

WriteUsers = Callable[..., pa.Table]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _job(model_uri: str, input: Path | str, output: Path | str, **kw: Any) -> dict[str, Any]:
    return {"model": model_uri, "input": str(input), "output": str(output), "id_cols": ("user_id",), **kw}


def test_an_output_that_contains_the_input_file_is_refused(
    model_uri: str, tmp_path: Path, write_users: WriteUsers
) -> None:
    """``-i x/in.parquet -o x/`` used to delete x/ - the input included - when it committed."""
    x = tmp_path / "x"
    write_users(x / "in.parquet")
    (x / "notes.txt").write_text("mine")
    before = _snapshot(x)
    for overwrite in (False, True):  # --overwrite never replaces a directory that holds an input
        with pytest.raises(RequestError, match=r"contains an input of the job .*in\.parquet") as err:
            run_batch(**_job(model_uri, x / "in.parquet", x, overwrite=overwrite))
        assert err.value.status == 400
        assert _snapshot(x) == before
    assert not list(tmp_path.glob(".staging-*"))
    # a partition below it is another directory: allowed, and the user's files stay
    run_batch(**_job(model_uri, x / "in.parquet", x, partition="date=2025-04-15"))
    assert {k: v for k, v in _snapshot(x).items() if not k.startswith("date=")} == before


def test_an_output_that_is_the_input_directory_or_inside_it_is_refused(
    model_uri: str, tmp_path: Path, write_users: WriteUsers
) -> None:
    users = tmp_path / "users"
    write_users(users / "a.parquet")
    before = _snapshot(users)
    with pytest.raises(RequestError, match="is an input of the job"):
        run_batch(**_job(model_uri, users, users, overwrite=True))
    with pytest.raises(RequestError, match=r"is inside the input directory .*the next run would read the"):
        run_batch(**_job(model_uri, users, users / "scores"))
    assert _snapshot(users) == before
    assert not (users / "scores").exists()
    assert not list(users.glob(".staging-*"))


def test_an_output_that_is_the_input_file_is_refused_and_stays_a_file(
    model_uri: str, tmp_path: Path, write_users: WriteUsers
) -> None:
    """``-o in.parquet`` used to turn the input file into a directory."""
    data = write_users(tmp_path / "in.parquet")
    with pytest.raises(RequestError, match="is an input of the job"):
        run_batch(**_job(model_uri, tmp_path / "in.parquet", tmp_path / "in.parquet", overwrite=True))
    assert (tmp_path / "in.parquet").is_file()
    assert pq.read_table(tmp_path / "in.parquet").equals(data)


def test_an_output_that_is_an_existing_file_is_refused(
    model_uri: str, tmp_path: Path, write_users: WriteUsers
) -> None:
    write_users(tmp_path / "in" / "a.parquet")
    (tmp_path / "report.csv").write_text("a,b\n1,2\n")
    for overwrite in (False, True):
        with pytest.raises(ConflictError, match="is an existing file, not a directory fourfold wrote") as err:
            run_batch(**_job(model_uri, tmp_path / "in", tmp_path / "report.csv", overwrite=overwrite))
        assert err.value.status == 409
    assert (tmp_path / "report.csv").read_text() == "a,b\n1,2\n"


def test_a_non_empty_directory_fourfold_did_not_write_needs_overwrite(
    model_uri: str, tmp_path: Path, write_users: WriteUsers
) -> None:
    write_users(tmp_path / "in" / "a.parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(
        ConflictError, match=r"is not empty and was not written by fourfold .*thesis.tex.*--overwrite"
    ):
        run_batch(**_job(model_uri, tmp_path / "in", out))
    assert (out / "thesis.tex").read_text() == "years of work"
    assert not list(tmp_path.glob(".staging-*"))

    run_batch(**_job(model_uri, tmp_path / "in", out, overwrite=True))  # forced: replaced
    assert not (out / "thesis.tex").exists()
    marker = json.loads((out / "_FOURFOLD").read_text())
    assert marker["model"] == "churn"
    assert set(marker["files"]) == {"_SUCCESS", "part-00000.parquet"}

    run_batch(**_job(model_uri, tmp_path / "in", out))  # fourfold's own output: a re-run replaces it
    (out / "mine.txt").write_text("added by hand")
    with pytest.raises(ConflictError, match=r"holds files fourfold did not write \(mine.txt\)"):
        run_batch(**_job(model_uri, tmp_path / "in", out))
    assert (out / "mine.txt").read_text() == "added by hand"

    empty = tmp_path / "empty"
    empty.mkdir()
    run_batch(**_job(model_uri, tmp_path / "in", empty))  # an empty directory is fine
    assert (empty / "_SUCCESS").exists()


def test_another_models_output_is_not_replaced(
    model_uri: str, tmp_path: Path, write_users: WriteUsers
) -> None:
    write_users(tmp_path / "in" / "a.parquet")
    out = tmp_path / "out"
    run_batch(**_job(model_uri, tmp_path / "in", out))
    marker = json.loads((out / "_FOURFOLD").read_text())
    (out / "_FOURFOLD").write_text(json.dumps({**marker, "model": "fraud"}))
    with pytest.raises(ConflictError, match="holds the scores of model 'fraud', not 'churn'"):
        run_batch(**_job(model_uri, tmp_path / "in", out))


def test_relative_paths_and_symlinks_are_resolved(
    model_uri: str, tmp_path: Path, write_users: WriteUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "users"
    write_users(users / "a.parquet")
    before = _snapshot(users)
    (tmp_path / "link").symlink_to(users, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for output in ("link", "./users/../users", "users/"):
        with pytest.raises(RequestError, match="is an input of the job"):
            run_batch(**_job(model_uri, "users", output, overwrite=True))
    with pytest.raises(RequestError, match="is an input of the job"):
        run_batch(**_job(model_uri, "link", "users"))
    assert _snapshot(users) == before
    assert (tmp_path / "link").is_symlink()


def test_dot_and_the_current_directorys_parents_are_refused(
    model_uri: str, tmp_path: Path, write_users: WriteUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_users(tmp_path / "data" / "in.parquet")
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    for output in (".", "..", str(tmp_path)):
        r = CliRunner().invoke(app, ["batch", model_uri, "-i", str(tmp_path / "data"), "-o", output,
                                     "--id-cols", "user_id", "--overwrite"])  # fmt: skip
        assert r.exit_code == 1, r.output
        assert "is the current directory or one of its parents" in r.output
        assert "Traceback" not in r.output
    assert (work / "keep.txt").read_text() == "keep"
    assert sorted(os.listdir(work)) == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["data", "ff-home", "pkg", "work"]


def test_a_store_outputs_quarantine_never_replaces_a_foreign_directory(
    model_uri: str, tmp_path: Path, write_users: WriteUsers
) -> None:
    write_users(tmp_path / "in" / "a.parquet", bad_every=10)
    q = tmp_path / "q"
    q.mkdir()
    (q / "old-report.parquet").write_text("not fourfold's")
    kw = _job(model_uri, tmp_path / "in", Settings().store_url, quarantine=str(q))
    with pytest.raises(ConflictError, match=r"--quarantine .* is not empty and was not written by fourfold"):
        run_batch(**kw)
    assert (q / "old-report.parquet").read_text() == "not fourfold's"
    summary = run_batch(**{**kw, "quarantine": str(tmp_path / "q2")})
    assert summary.rejected == 40
    run_batch(**{**kw, "quarantine": str(tmp_path / "q2")})  # its own earlier quarantine: replaced
    assert pq.read_table(tmp_path / "q2").num_rows == 40
