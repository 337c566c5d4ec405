"""``fourfold demo --all``: the demo's model served in the four patterns, on the same five new events.

Five users each make one more transaction at the same instant ``t`` (after the log). Each pattern scores
those five events its own way, and the table must show one score per event:

* **online**: ``fourfold serve``'s app (uvicorn on a loopback port, the server's clock at ``t``):
  ``POST /predict`` with the user id and the transaction; the windows come from the online store;
* **batch**: ``run_batch`` on a parquet file of the five requests, the windows computed point-in-time
  from the event log as of ``t`` (``--events``, ``--as-of``);
* **embedded**: an edge bundle exported (and gated) now, ``EdgeModel.predict_one`` on the windows read
  from the store as of ``t`` plus the transaction;
* **streaming**: ``run_stream`` over a JSONL log of the five events, on the online store: the stream
  reads each user's windows (as the demo's batch materialize left them), scores, then folds the event in
  where ``/predict`` reads it (so it runs last).

Then each pattern's own measure - /predict latency, batch rows/s (point-in-time features included),
stream events/s on a replay of the log into a fresh store, the edge's one-row latency - and the
advisor's choice for the seed's fraud job (a human at checkout, 100 ms, time-sensitive features).
"""

from __future__ import annotations

import http.client
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fourfold.advise import Answers, advise
from fourfold.demo.features import FRAUD_FEATURES
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import open_store

__all__ = ["FourPatterns", "run_four"]

REQUEST = ("amount", "merchant_category", "device")
PATTERNS = ("online", "batch", "streaming", "embedded")


@dataclass(frozen=True)
class FourPatterns:
    events: list[dict[str, Any]]
    scores: dict[str, list[float]]  # pattern -> the five events' scores, in order
    measures: dict[str, str]  # pattern -> its measured latency / throughput
    advice: str
    bundle: Path

    @property
    def identical(self) -> bool:
        first = self.scores[PATTERNS[0]]
        return all(self.scores[p] == first for p in PATTERNS)

    def render(self) -> str:
        lines = ["", "the four patterns, one model, the same five new transactions:",
                 f"  {'event':<10} {'user':<9}" + "".join(f"{p:>12}" for p in PATTERNS)]  # fmt: skip
        for i, e in enumerate(self.events):
            cells = "".join(f"{self.scores[p][i]:>12.6f}" for p in PATTERNS)
            lines.append(f"  {e['event_id']:<10} {e['user_id']:<9}{cells}")
        verdict = "identical in every pattern" if self.identical else "DIFFERENT: a bug, please report it"
        lines.append(f"  scores: {verdict}")
        for p in PATTERNS:
            lines.append(f"  {p:<10} {self.measures[p]}")
        lines.append(f"  edge bundle {self.bundle} (from fourfold_edge import EdgeModel)")
        lines.append(f"  advisor   {self.advice}")
        return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(uri: str, store_url: str, now_ms: int) -> Iterator[int]:
    import uvicorn

    from fourfold.online.app import build_app
    from fourfold.online.settings import ServeSettings

    settings = ServeSettings(model=uri, store=store_url, access_log=False, cache_size=0, reload_interval_s=0)
    port = _free_port()
    config = uvicorn.Config(build_app(settings, clock=lambda: now_ms), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the demo's server did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _online(uri: str, store_url: str, now_ms: int, events: list[dict[str, Any]]) -> tuple[list[float], str]:
    bodies = [json.dumps({"user_id": e["user_id"], **{k: e[k] for k in REQUEST}}).encode() for e in events]
    with _serving(uri, store_url, now_ms) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"content-type": "application/json"}

        def ask(body: bytes) -> dict[str, Any]:
            conn.request("POST", "/predict", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"/predict answered {resp.status}: {data[:200]!r}")
            answer: dict[str, Any] = json.loads(data)
            return answer

        scores = [float(ask(b)["score"]) for b in bodies]
        times = []
        for i in range(400):
            t0 = time.perf_counter()
            ask(bodies[i % len(bodies)])
            times.append(time.perf_counter() - t0)
        conn.close()
    p50, p99 = np.percentile(np.array(times[50:]) * 1000, [50, 99])
    return scores, f"POST /predict p50 {p50:.2f} ms, p99 {p99:.2f} ms (store read + check + score, cache off)"


def _batch(uri: str, log_path: Path, now_ms: int, events: list[dict[str, Any]], work: Path,
           log: pa.Table) -> tuple[list[float], str]:  # fmt: skip
    from fourfold.batch import run_batch

    as_of = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds")
    requests = [
        {"event_id": e["event_id"], "user_id": e["user_id"], **{k: e[k] for k in REQUEST}} for e in events
    ]
    pq.write_table(pa.Table.from_pylist(requests), work / "requests.parquet")
    run_batch(model=uri, input=str(work / "requests.parquet"), output=str(work / "scored"),
              events=str(log_path), as_of=as_of, id_cols=("event_id",))  # fmt: skip
    out = pq.read_table(work / "scored")
    by_id = dict(zip(out["event_id"].to_pylist(), out["score"].to_pylist(), strict=True))
    scores = [float(by_id[e["event_id"]]) for e in events]
    many = log.select(["event_id", "user_id", *REQUEST]).slice(max(0, log.num_rows - 200_000))
    pq.write_table(many, work / "many.parquet")
    summary = run_batch(model=uri, input=str(work / "many.parquet"), output=str(work / "many-scored"),
                        events=str(log_path), as_of=as_of, id_cols=("event_id",))  # fmt: skip
    return scores, (
        f"{summary.rows_per_s:,.0f} rows/s on {summary.rows_in:,} requests, their windows computed "
        f"point-in-time from {log.num_rows:,} events ({summary.runtime})"
    )


def _embedded(uri: str, store_url: str, now_ms: int, events: list[dict[str, Any]],
              bundle: Path) -> tuple[list[float], str]:  # fmt: skip
    from fourfold.edge import EdgeModel
    from fourfold.embedded.export import export_bundle
    from fourfold.registry import resolve

    pkg = resolve(uri)
    chosen = pkg.serving_runtime()
    export_bundle(pkg, chosen if chosen in ("onnx", "c") else "onnx", bundle)
    edge = EdgeModel(bundle)
    with closing(open_store(store_url)) as store:
        windows = OnlineFeatures(FRAUD_FEATURES, store).get([e["user_id"] for e in events], at_ms=now_ms)
        empty = OnlineFeatures(FRAUD_FEATURES, store).empty(now_ms)
    rows = [{**(w if w is not None else empty), **{k: float(e[k]) for k in REQUEST}}
            for w, e in zip(windows, events, strict=True)]  # fmt: skip
    rows = [{k: r[k] for k in edge.feature_order} for r in rows]
    scores = [float(edge.predict_one(r)["score"]) for r in rows]
    times = np.empty(5000)
    row = rows[0]
    for i in range(len(times)):
        t0 = time.perf_counter_ns()
        edge.predict_one(row)
        times[i] = time.perf_counter_ns() - t0
    p50, p99 = np.percentile(times[500:] / 1000, [50, 99])
    fmt = edge.manifest["model"]["format"]
    return scores, f"EdgeModel.predict_one p50 {p50:.1f} us, p99 {p99:.1f} us ({fmt}, in-process, checked)"


def _stream(uri: str, store_url: str, events: list[dict[str, Any]], work: Path,
            log: pa.Table) -> tuple[list[float], str]:  # fmt: skip
    """The five events through the stream on the online store (it reads the windows the demo
    materialized, scores, folds the events in - where /predict sees them); then, for its rate, the
    log's last 100k events replayed into a fresh store."""
    from fourfold.stream import StreamOptions, run_stream

    def jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
        with path.open("w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    jsonl(work / "new.jsonl", events)
    run_stream(StreamOptions(uri, source=str(work / "new.jsonl"), sink=str(work / "decisions.jsonl"),
                             dlq=str(work / "dead.jsonl"), store=store_url, group="demo"))  # fmt: skip
    with (work / "decisions.jsonl").open() as f:
        decided = {d["event_id"]: d["score"] for d in map(json.loads, f)}
    scores = [float(decided[e["event_id"]]) for e in events]
    replay = log.drop_columns(["is_fraud"]).slice(max(0, log.num_rows - 100_000))
    replay = replay.set_column(replay.schema.get_field_index("event_time"), "event_time",
                               pc.cast(replay["event_time"], pa.int64()))  # fmt: skip
    jsonl(work / "replay.jsonl", replay.to_pylist())
    options = StreamOptions(
        uri,
        source=str(work / "replay.jsonl"),
        sink=str(work / "replay-decisions.jsonl"),
        dlq=str(work / "replay-dead.jsonl"),
        store=f"sqlite:///{work / 'replay-state.db'}",
        group="demo-replay",
    )
    t0 = time.perf_counter()
    summary = run_stream(options)
    seconds = time.perf_counter() - t0
    return scores, (
        f"{summary.decided / seconds:,.0f} events/s end to end on a JSONL replay of {replay.num_rows:,} "
        "events into a fresh SQLite store (windows, score, decision, checkpoints)"
    )


def run_four(uri: str, log_path: Path, store_url: str, out_dir: Path) -> FourPatterns:
    """Score five new transactions, of the five users seen last in the log, in every pattern."""
    log = pq.read_table(log_path)
    users: list[str] = []
    for u in reversed(log["user_id"].slice(max(0, log.num_rows - 1000)).to_pylist()):
        if u not in users:
            users.append(u)
    now_ms = int(pc.max(log["event_time"]).cast(pa.int64()).as_py()) + 1_000
    rng = np.random.default_rng(7)
    last = {u: i for i, u in enumerate(log["user_id"].to_pylist()) if u in users[:5]}
    template = log.drop_columns(["is_fraud"]).take(pa.array([last[u] for u in users[:5]])).to_pylist()
    events = [  # each user's next transaction: the fields of their last one, a new id, time and amount
        {**row, "event_id": 9_000_000_001 + i, "event_time": now_ms,
         "amount": round(float(rng.lognormal(3.5, 1.2)), 2), "merchant_category": int(rng.integers(0, 8)),
         "device": int(rng.integers(0, 3))}
        for i, row in enumerate(template)
    ]  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="four-", dir=out_dir))
    scores: dict[str, list[float]] = {}
    measures: dict[str, str] = {}
    scores["online"], measures["online"] = _online(uri, store_url, now_ms, events)
    scores["batch"], measures["batch"] = _batch(uri, log_path, now_ms, events, work, log)
    bundle = out_dir / "fraud-edge"
    scores["embedded"], measures["embedded"] = _embedded(uri, store_url, now_ms, events, bundle)
    scores["streaming"], measures["streaming"] = _stream(uri, store_url, events, work, log)
    a = advise(Answers(human_waiting=True, sla_ms=100, can_precompute=False, features_time_sensitive=True))
    hybrids = ", ".join(h.name for h in a.hybrids)
    advice = f"{a.pattern}" + (f" + {hybrids}" if hybrids else "") + f": {a.reason}"
    return FourPatterns(events, scores, measures, advice, bundle)
