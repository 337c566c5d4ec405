"""``--resume`` reuses a killed run's finished fragments only when nothing they depend on changed: an
input file rewritten since, or another runtime (given, or chosen by ``auto``), is refused (409)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fourfold import compile_model, load_package, save_model
from fourfold.batch import run_batch
from fourfold.errors import ConflictError
from fourfold.model.predictor import Predictor
from midway import kill_midway

WriteUsers = Callable[..., pa.Table]


def _inputs(root: Path, write_users: WriteUsers) -> None:
    for i in range(3):
        write_users(root / f"part-{i}.parquet", 400, seed=i)


def test_resume_refuses_an_input_file_that_changed(
    model_uri: str, tmp_path: Path, write_users: WriteUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inputs(tmp_path / "in", write_users)
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"), "output": str(tmp_path / "out"),
                          "id_cols": ("user_id",), "batch_rows": 400, "threads": 1}  # fmt: skip
    staging = kill_midway(kw, monkeypatch)
    write_users(tmp_path / "in" / "part-0.parquet", 400, seed=7)  # the finished fragment's file, rewritten
    with pytest.raises(
        ConflictError, match=r"the input files .*part-0\.parquet.* run without --resume"
    ) as err:
        run_batch(**kw, resume=True)
    assert err.value.status == 409
    assert not (tmp_path / "out").exists()
    assert (staging / "part-00000.done").exists()  # an earlier run's staging: kept for the user to decide

    fresh = run_batch(**kw)  # without --resume: clean, and every score is the new input's
    assert fresh.resumed == 0
    out = pq.read_table(tmp_path / "out").sort_by("user_id")
    data = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "in").glob("*.parquet")))
    from fourfold import load_predictor

    want = load_predictor(model_uri).predict(data.sort_by("user_id"))["score"]
    np.testing.assert_allclose(out["score"].to_numpy(), want, atol=1e-6)


def test_resume_continues_an_unchanged_job(
    model_uri: str, tmp_path: Path, write_users: WriteUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inputs(tmp_path / "in", write_users)
    kw: dict[str, Any] = {"model": model_uri, "input": str(tmp_path / "in"), "output": str(tmp_path / "out"),
                          "id_cols": ("user_id",), "batch_rows": 400, "threads": 1}  # fmt: skip
    staging = kill_midway(kw, monkeypatch)
    identity = json.loads((staging / "_job.json").read_text())
    assert identity["runtime"] == "native"
    assert [(f["size"] > 0, f["mtime_ns"] > 0) for f in identity["files"]] == [(True, True)] * 3
    summary = run_batch(**kw, resume=True)
    assert (summary.resumed, summary.rows_resumed, summary.rows_in) == (1, 400, 1200)


def test_resume_refuses_another_runtime(
    tmp_path: Path, write_users: WriteUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package compiled to ONNX scores with either runtime; fragments of one and of the other must never
    be committed under one ``_SUCCESS`` that names one runtime."""
    from conftest import build

    model, _, table = build("xgboost")
    pkg = save_model(model, tmp_path / "pkg", name="churn", sample=table)
    compile_model(pkg.path)
    auto = Predictor(load_package(pkg.path)).runtime  # the runtime the package's compile chose
    other = "native" if auto == "onnx" else "onnx"
    _inputs(tmp_path / "in", write_users)
    kw: dict[str, Any] = {"model": str(pkg.path), "input": str(tmp_path / "in"),
                          "output": str(tmp_path / "out"), "id_cols": ("user_id",), "batch_rows": 400,
                          "threads": 1}  # fmt: skip
    kill_midway({**kw, "runtime": other}, monkeypatch)
    for runtime in ("auto", auto):  # "auto" is resolved before it is compared
        with pytest.raises(ConflictError, match=f"scored on {other}, this one on {auto}.*without --resume"):
            run_batch(**kw, runtime=runtime, resume=True)
    summary = run_batch(**kw, runtime=other, resume=True)
    assert (summary.resumed, summary.runtime) == (1, other)
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["runtime"] == other
