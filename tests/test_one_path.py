"""The same answer everywhere: one row gets one score, or one rejection with one reason, whichever pattern
scores it - ``Predictor.predict``, ``/predict`` (windows read from a real store), ``/predict/batch``, the
Open Inference Protocol, the local batch engine (with the windows as input columns, and computed
point-in-time from the event log), the Spark engine, the edge bundle (``fourfold export``, loaded by
the vendorable runtime, with the runtime's own check; the cascade asking the server) and the stream
(each row an event at the server's clock, its windows from the state the store holds - an event never
sees another at its own time).

Rows are drawn by Hypothesis: request fields near the model's split thresholds and its decision
threshold, extreme values (beyond float32: the package serves on ONNX Runtime's float32), nulls,
booleans and text, for known and unknown users.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fourfold
from fourfold import LocalRegistry, Predictor, load_package, save_model
from fourfold.batch import run_batch
from fourfold.demo.data import generate_transactions
from fourfold.demo.features import FEATURES, FRAUD_FEATURES, featurize
from fourfold.demo.train import train_fraud_model
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import open_store
from fourfold.model.check import F32_OVERFLOW
from fourfold.model.parity import boundary_probes, tree_splits
from fourfold.model.signature import Feature, Signature
from fourfold.online.settings import ServeSettings
from fourfold.stream import StreamOptions, run_stream
from serving import running

REQUEST = ("amount", "merchant_category", "device")


class World:
    """A registered, compiled fraud model, its store as of ``now``, its event log, a running server."""

    def __init__(self, root: Path, base: str, now: int, users: list[str], splits: dict[str, list[float]],
                 probes: list[dict[str, float]]) -> None:  # fmt: skip
        self.root, self.base, self.now, self.users = root, base, now, users
        self.splits, self.probes = splits, probes
        self.predictor = fourfold.load_predictor("models:/fraud/production")
        self.online = OnlineFeatures(FRAUD_FEATURES, open_store(f"sqlite:///{root / 'features.db'}"))
        self.runs = 0
        self.home = root / "home"
        from fourfold.edge import EdgeModel

        self.edge = EdgeModel(root / "edge")
        from fourfold.edge import CascadeModel

        self.cascade = CascadeModel(self.edge, base, low=0.0, high=1.0, budget_ms=10_000)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("one-path")
    home = root / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("FOURFOLD_HOME", str(home))
    log = generate_transactions(12_000, seed=11)
    result = train_fraud_model(featurize(log), n_estimators=30, max_depth=4)
    nullable = {f.name for f in FRAUD_FEATURES.windowed if math.isnan(f.empty_value)}
    sig = Signature.for_task("binary", [Feature(f, nullable=f in nullable) for f in FEATURES])
    pkg = save_model(result.model, root / "pkg", name="fraud", signature=sig, sample=result.sample,
                     features=FRAUD_FEATURES)  # fmt: skip
    fourfold.compile_model(pkg)
    LocalRegistry().register(pkg.path, name="fraud", aliases=["production"])
    from fourfold.embedded.export import export_bundle

    chosen = load_package(pkg.path).serving_runtime()
    export_bundle(pkg.path, chosen if chosen in ("onnx", "c") else "onnx", root / "edge")
    history = log.slice(0, 10_000)
    pq.write_table(history, root / "events.parquet")
    url = f"sqlite:///{root / 'features.db'}"
    with closing(open_store(url)) as store:
        OnlineFeatures(FRAUD_FEATURES, store).materialize(history)
    now = int(pc.max(history["event_time"]).cast(pa.int64()).as_py()) + 1
    users = sorted(set(history.slice(9_000)["user_id"].to_pylist()))[:40]
    compiled = load_package(pkg.path)
    import onnx

    proto = onnx.load(str(compiled.path / compiled.runtimes["onnx"]["file"]))
    names = sig.feature_names
    splits: dict[str, list[float]] = {n: [] for n in names}
    for j, v in tree_splits(proto):
        splits[names[j]].append(v)
    native = compiled.load_native()
    base_rows = Predictor(compiled, runtime="native").check(compiled.sample()).x
    near = boundary_probes(base_rows, native.predict_raw, compiled.threshold, limit=64)
    probes = [dict(zip(names, map(float, row), strict=True)) for row in near]
    settings_ = ServeSettings(model="models:/fraud/production", store=url, reload_interval_s=0,
                              access_log=False, cache_size=0, max_body_bytes=10_000_000)  # fmt: skip
    from fourfold.batch.spark_session import spark_session

    spark, created = spark_session("local[2]")  # one session for every Spark job of the module
    try:
        with running(settings_, clock=lambda: now) as base:
            world = World(root, base, now, users, splits, probes)
            with world.cascade:
                yield world
    finally:
        if created:
            spark.stop()
        mp.undo()


def _value(feature: str, splits: dict[str, list[float]]) -> st.SearchStrategy[Any]:
    """A request field's value: next to a split threshold, ordinary, extreme, missing or mistyped."""
    near = st.sampled_from(splits.get(feature) or [0.0]).flatmap(
        lambda t: st.sampled_from([t, float(np.nextafter(np.float32(t), np.float32(-np.inf))),
                                   float(np.nextafter(np.float32(t), np.float32(np.inf))), t - 1e-9])
    )  # fmt: skip
    ordinary = (
        st.floats(min_value=0, max_value=2000, allow_nan=False) if feature == "amount" else st.integers(0, 11)
    )
    extreme = st.sampled_from(
        [F32_OVERFLOW, -F32_OVERFLOW, float(np.nextafter(F32_OVERFLOW, 0)), 1e300, -0.0]
    )
    wrong = st.sampled_from([True, False, "12", [1.0]])
    return st.one_of(near, near, ordinary, extreme, st.none(), wrong)


@st.composite
def requests(draw: st.DrawFn, world: World) -> list[dict[str, Any]]:
    rows = []
    for i in range(draw(st.integers(1, 25))):
        user = draw(st.sampled_from([*world.users, "nobody"]))
        rows.append({"user_id": user, **{f: draw(_value(f, world.splits)) for f in REQUEST}, "_row": i})
    return rows


def _typed(row: dict[str, Any]) -> bool:
    """A row a typed column can hold (no text, lists or booleans in a numeric column)."""
    return all(v is None or type(v) in (int, float) for k, v in row.items() if k in REQUEST)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    data: dict[str, Any] = {"row_id": pa.array([r["_row"] for r in rows], pa.int64())}
    for c in columns:
        if c == "user_id":
            data[c] = pa.array([r[c] for r in rows], pa.string())
        else:
            data[c] = pa.array([None if r[c] is None else float(r[c]) for r in rows], pa.float64())
    return pa.table(data)


def _batch_results(world: World, table: pa.Table, **kw: Any) -> dict[int, Any]:
    """``row_id -> score`` (a float) or ``-> reason`` (a str) from a real batch job's committed output."""
    world.runs += 1
    job = world.root / f"job-{world.runs}"
    job.mkdir()
    pq.write_table(table, job / "in.parquet")
    run_batch(model="models:/fraud/production", input=str(job / "in.parquet"), output=str(job / "out"),
              id_cols=("row_id",), **kw)  # fmt: skip
    got: dict[int, Any] = {}
    out = job / "out"
    for part in sorted(out.glob("part-*.parquet")):
        t = pq.read_table(part)
        got |= dict(zip(t["row_id"].to_pylist(), t["score"].to_pylist(), strict=True))
    for part in sorted((out / "_quarantine").glob("*.parquet")):
        t = pq.read_table(part)
        got |= dict(zip(t["row_id"].to_pylist(), t["_reason"].to_pylist(), strict=True))
    return got


def _stream_results(world: World, rows: list[dict[str, Any]]) -> dict[int, Any]:
    """``event_id -> score`` from a real ``fourfold stream`` run over a JSONL log of ``rows`` (each an event
    at the server's clock), on a copy of the server's store; ``-> reason`` from its dead letters."""
    world.runs += 1
    job = world.root / f"stream-{world.runs}"
    job.mkdir()
    with (
        closing(sqlite3.connect(world.root / "features.db")) as src,
        closing(sqlite3.connect(job / "features.db")) as dst,
    ):
        src.backup(dst)
    events = [
        {"event_id": r["_row"], "user_id": r["user_id"], "event_time": world.now, "merchant_id": "m-1",
         **{f: r[f] for f in REQUEST}}
        for r in rows
    ]  # fmt: skip
    (job / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    out, dlq = job / "out.jsonl", job / "dlq.jsonl"
    run_stream(StreamOptions("models:/fraud/production", str(job / "events.jsonl"), str(out), str(dlq),
                             store=f"sqlite:///{job / 'features.db'}"))  # fmt: skip
    got: dict[int, Any] = {}
    for line in out.read_text().splitlines():
        record = json.loads(line)
        got[record["event_id"]] = record["score"]
    for line in dlq.read_text().splitlines() if dlq.exists() else []:
        letter = json.loads(line)
        assert letter["code"] == "invalid", letter
        got[json.loads(letter["payload"])["event_id"]] = letter["reason"]
    return got


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_pattern_gives_the_same_score_or_the_same_reason(
    world: World, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOURFOLD_HOME", str(world.home))  # the module's registry, not the test's own
    rows = data.draw(requests(world))
    probes = data.draw(st.lists(st.sampled_from(world.probes), max_size=8))
    p = world.predictor
    keys = [r["user_id"] for r in rows]
    stored = world.online.get(keys, at_ms=world.now)
    empty = world.online.empty(world.now)
    full = [
        {**(s if s is not None else empty), **{f: r[f] for f in REQUEST}}
        for r, s in zip(rows, stored, strict=True)
    ]
    # the reference: the core's check and score, row by row
    checked = p.check(full)
    scores = iter(p.score(checked.x)["score"].tolist())
    expected: dict[int, Any] = {
        r["_row"]: next(scores) if checked.ok[i] else checked.reason(i) for i, r in enumerate(rows)
    }

    # Predictor.predict_one, /predict: one row at a time
    for i, (r, row) in enumerate(zip(rows, full, strict=True)):
        want = expected[r["_row"]]
        if isinstance(want, float):
            assert p.predict_one(row)["score"] == want
        else:
            with pytest.raises(fourfold.InputError) as err:
                p.predict_one(row)
            assert err.value.message == want
        from fourfold.edge import EdgeInputError

        if isinstance(want, float):  # the edge bundle: the same runtime file, the same one-row call
            assert world.edge.predict_one(row)["score"] == want
            # Embedded + Online: a cascade unsure of every score asks the server, which computes the
            # windows itself from the request fields and the entity id
            asked = world.cascade.predict_one(row, extra={"user_id": r["user_id"]})
            assert (asked["source"], asked["score"]) == ("server", want), asked
        else:
            with pytest.raises(EdgeInputError) as edge_err:
                world.edge.predict_one(row)
            assert str(edge_err.value) == want
        answer = httpx.post(world.base + "/predict", json={k: v for k, v in r.items() if k != "_row"})
        if isinstance(want, float):
            assert answer.status_code == 200, answer.text
            assert answer.json()["score"] == want
            assert answer.json()["entity_found"] is (stored[i] is not None)
        else:
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"] == want

    # /predict/batch: every bad row listed with its reason; the good ones scored in one call
    body = [{k: v for k, v in r.items() if k != "_row"} for r in rows]
    answer = httpx.post(world.base + "/predict/batch", json={"rows": body}).json()
    bad = {rows[b["row"]]["_row"]: b["reason"] for b in answer.get("rejected", [])}
    assert bad == {k: v for k, v in expected.items() if isinstance(v, str)}
    good = [b for b, r in zip(body, rows, strict=True) if r["_row"] not in bad]
    if good:
        scored = httpx.post(world.base + "/predict/batch", json={"rows": good}).json()["predictions"]
        assert [s["score"] for s in scored] == [expected[r["_row"]] for r in rows if r["_row"] not in bad]

    # the stream: every row an event, decided or dead-lettered with the reason the check gives
    assert _stream_results(world, rows) == expected

    # the typed rows (and the decision-boundary probes, full feature rows) through the columnar patterns
    typed = [(r, f) for r, f in zip(rows, full, strict=True) if _typed(r)]
    columns = [{"_row": 1000 + k, **probe} for k, probe in enumerate(probes)]
    columns += [{**f, "_row": r["_row"]} for r, f in typed]
    for k, probe in enumerate(probes):
        expected[1000 + k] = float(p.predict_one(probe)["score"])  # type: ignore[arg-type]
    if not columns:
        return
    table = _table(columns, list(FEATURES))
    column_check = p.check(table)  # a column's reason is the row's reason
    for i, c in enumerate(columns):
        assert (column_check.reason(i) or None) == (
            expected[c["_row"]] if isinstance(expected[c["_row"]], str) else None
        )

    # the Open Inference Protocol: one [N] tensor per feature (null = missing)
    tensors = [{"name": f, "shape": [len(columns)], "datatype": "FP64",
                "data": [None if c[f] is None or c[f] != c[f] else float(c[f]) for c in columns]}
               for f in FEATURES]  # fmt: skip
    oip = httpx.post(world.base + "/v2/models/fraud/infer", json={"inputs": tensors})
    first_bad = next((c for c in columns if isinstance(expected[c["_row"]], str)), None)
    if first_bad is None:
        assert oip.status_code == 200, oip.text
        assert oip.json()["outputs"][0]["data"] == [expected[c["_row"]] for c in columns]
    else:
        assert oip.status_code == 400
        assert oip.json()["error"].startswith(
            f"row {columns.index(first_bad)}: {expected[first_bad['_row']]}"
        )

    want = {c["_row"]: expected[c["_row"]] for c in columns}
    assert _batch_results(world, table) == want  # the local engine, windows as input columns
    assert _batch_results(world, table, engine="spark", spark_master="local[2]") == want
    # the local engine computing the windows itself, point-in-time from the log, as of the server's clock
    if typed:
        requested = _table([{**r} for r, _ in typed], ["user_id", *REQUEST])
        computed = _batch_results(
            world, requested, events=str(world.root / "events.parquet"), as_of=str(world.now)
        )
        assert computed == {r["_row"]: expected[r["_row"]] for r, _ in typed}


def test_every_pattern_serves_with_the_runtime_compile_chose(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOURFOLD_HOME", str(world.home))
    p = world.predictor
    assert p.runtime == p.package.serving_runtime() == p.package.manifest["serving"]["runtime"]
    text = httpx.get(world.base + "/metrics").text
    assert f'runtime="{p.runtime}"' in text
    table = _table([{"_row": 0, **world.probes[0]}], list(FEATURES))
    world.runs += 1
    job = world.root / f"job-{world.runs}"
    job.mkdir()
    pq.write_table(table, job / "in.parquet")
    summary = run_batch(model="models:/fraud/production", input=str(job / "in.parquet"),
                        output=str(job / "out"), id_cols=("row_id",))  # fmt: skip
    assert summary.runtime == p.runtime
