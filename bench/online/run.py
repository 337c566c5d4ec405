"""Online serving benchmark: fourfold against the seed's FastAPI code and the HTTP floor, same model, same
machine, same load generator (``wrk`` with a Lua script rotating 1,000 distinct request bodies), at
concurrency 1 and 32.

    .venv/bin/python bench/online/run.py [--duration 8] [--workers 2]

Servers (each with ``--workers`` processes, one model thread per worker - the seed's best setting):
  floor     a minimal Starlette endpoint returning a constant (the HTTP floor)
  seed      the seed's FastAPI + uvicorn code with the native XGBoost model
  BentoML   a BentoML 1.4 service; MLServer with its XGBoost runtime (``peers.py``; their own venvs)
  fourfold  ``fourfold serve`` (ONNX runtime, prediction cache off so every request is scored)
Two comparisons: all features in the request (fourfold's OIP ``/infer`` vs the seed's ``/infer``), and
the seed's ``/predict`` with a Redis feature fetch (fourfold reads the state and computes the windows as
of now; the seed HMGETs precomputed values). Needs ``wrk`` (Debian package) and ``redis-server``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def lua(path: str, bodies: list[str]) -> str:
    items = ",\n".join(json.dumps(b) for b in bodies)
    return f"""
local bodies = {{ {items} }}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, "{path}", nil, bodies[i])
end
"""


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)]


def wrk(url: str, script: Path, connections: int, duration: int) -> tuple[float, float, float, int]:
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],  # noqa: E501
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p50, p99, int(m.group(1)) if m else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument(
        "--only", default="", help="comma-separated servers to run: floor,seed,bentoml,mlserver,fourfold"
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    home = Path(tempfile.mkdtemp(prefix="ff-online-bench-"))
    os.environ["FOURFOLD_HOME"] = str(home)

    from common import free_port, redis_server

    from fourfold import load_package
    from fourfold.demo.features import FRAUD_FEATURES
    from fourfold.demo.run import run_demo
    from fourfold.features.online import OnlineFeatures
    from fourfold.features.stores import open_store

    print("training the demo model ...", file=sys.stderr)
    run_demo(events=args.events, out_dir=home / "demo")
    pkg = load_package(home / "demo" / "fraud-model")
    import pyarrow.parquet as pq

    log = pq.read_table(home / "demo" / "transactions.parquet")
    names = list(pkg.signature.feature_names)
    windowed = [f.name for f in FRAUD_FEATURES.windowed]
    rng = np.random.default_rng(0)
    rows = log.take(rng.choice(log.num_rows, 1000, replace=False)).to_pylist()

    results: list[tuple[str, str, int, float, float, float, int]] = []
    with redis_server() as rport:
        store = open_store(f"redis://127.0.0.1:{rport}/0")
        online = OnlineFeatures(FRAUD_FEATURES, store)
        online.materialize(log)
        users = sorted({r["user_id"] for r in rows})
        now = int(time.time() * 1000)
        import redis

        r = redis.Redis(port=rport)
        for u, feats in zip(
            users, online.get(users, at_ms=now), strict=True
        ):  # the seed's precomputed hashes
            assert feats is not None
            r.hset(
                f"seed:{u}", mapping={k: (v if v == v else "nan") for k, v in feats.items() if k in windowed}
            )
        store.close()

        x = np.nan_to_num(np.array([[float(row.get(n) or 0.0) for n in names] for row in rows]))
        oip = [json.dumps({"inputs": [{"name": "x", "shape": [1, len(names)], "datatype": "FP64",
                                        "data": xi.tolist()}]}) for xi in x]  # fmt: skip
        plain = [json.dumps({"features": xi.tolist()}) for xi in x]
        predict = [json.dumps({k: row[k] for k in ("user_id", "amount", "merchant_category", "device")})
                   for row in rows]  # fmt: skip
        scripts = {}
        for name, path, bodies in [("oip", "/v2/models/fraud/infer", oip), ("plain", "/infer", plain),
                                   ("predict", "/predict", predict)]:  # fmt: skip
            scripts[name] = home / f"{name}.lua"
            scripts[name].write_text(lua(path, bodies))

        booster_json = home / "model.json"
        import xgboost as xgb

        xgb.Booster(model_file=str(pkg.path / "artifacts" / "model.ubj")).save_model(booster_json)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SEED_MODEL": str(booster_json),
               "SEED_STORE_FEATURES": ",".join(windowed), "SEED_REDIS_PORT": str(rport),
               "FOURFOLD_ACCESS_LOG": "false", "FOURFOLD_CACHE_SIZE": "0", "FOURFOLD_RELOAD_INTERVAL_S": "0"}  # fmt: skip  # noqa: E501
        uv = [sys.executable, "-m", "uvicorn", "--workers", str(args.workers), "--loop", "uvloop",
              "--http", "httptools", "--log-level", "warning", "--no-access-log", "--host", "127.0.0.1"]  # fmt: skip  # noqa: E501
        fourfold = [sys.executable, "-m", "fourfold.cli.main", "serve", "models:/fraud/production",
                    "--workers", str(args.workers), "--threads", "1", "--store", f"redis://127.0.0.1:{rport}/0"]  # fmt: skip  # noqa: E501
        import peers

        def with_port(cmd: list[str]) -> Callable[[int], list[str]]:
            return lambda port: [*cmd, "--port", str(port)]

        env["BENTO_WORKERS"] = str(args.workers)
        servers: list[tuple[str, Callable[[int], list[str]], list[tuple[str, str, str]]]] = [
            ("floor (Starlette constant)", with_port([*uv, "floor_app:app"]), [("infer", "plain", "/infer")]),
            ("seed FastAPI + native model", with_port([*uv, "seed_app:app"]),
             [("infer", "plain", "/infer"), ("predict+redis", "predict", "/predict")]),
            ("BentoML", lambda port: peers.bentoml_command(home, port), [("infer", "plain", "/infer")]),
            ("MLServer", lambda port: peers.mlserver_command(home, booster_json, port, free_port(), free_port()),  # noqa: E501
             [("infer", "oip", "/v2/models/fraud/infer")]),
            ("fourfold serve", with_port(fourfold),
             [("infer", "oip", "/v2/models/fraud/infer"), ("predict+redis", "predict", "/predict")]),
        ]  # fmt: skip
        wanted = {w.strip().lower() for w in args.only.split(",") if w.strip()}
        for label, make, runs in servers:
            if wanted and label.split()[0].lower() not in wanted:
                continue
            port = free_port()
            proc = subprocess.Popen(make(port), cwd=HERE, env={**env, "PYTHONPATH": str(HERE)},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                wait_ready(f"http://127.0.0.1:{port}/", timeout=120)
                time.sleep(3 if label in ("BentoML", "MLServer") else 1.5)  # all workers and the model up
                for kind, script, path in runs:
                    url = f"http://127.0.0.1:{port}{path}"
                    wrk(url, scripts[script], 8, 2)  # warm up
                    for conns in (1, 32):
                        rps, p50, p99, bad = wrk(url, scripts[script], conns, args.duration)
                        results.append((label, kind, conns, rps, p50, p99, bad))
                        print(f"  {label:<28} {kind:<14} c={conns:<3} {rps:>9,.0f} req/s", file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(timeout=30)

    print(f"\nonline bench: demo fraud XGBoost, {args.workers} workers x 1 thread, wrk {args.duration}s, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(
        f"{'server':<28} {'endpoint':<14} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
    )
    for label, kind, conns, rps, p50, p99, bad in results:
        print(f"{label:<28} {kind:<14} {conns:>4} {rps:>9,.0f} {p50:>8.2f} {p99:>8.2f} {bad:>8}")
    by = {(lab, k, c): rps for lab, k, c, rps, *_ in results}
    for kind in ("infer", "predict+redis"):
        ff, seed = by.get(("fourfold serve", kind, 32)), by.get(("seed FastAPI + native model", kind, 32))
        if ff and seed:
            print(f"fourfold / seed ({kind}, c=32): {ff / seed:.2f}x")
    peer_best = max((by.get((p, "infer", 32), 0.0) for p in ("BentoML", "MLServer")), default=0.0)
    if peer_best and by.get(("fourfold serve", "infer", 32)):
        ratio = by[("fourfold serve", "infer", 32)] / peer_best
        print(f"fourfold / best of BentoML, MLServer (infer, c=32): {ratio:.2f}x")
    floor = by.get(("floor (Starlette constant)", "infer", 32))
    if floor and by.get(("fourfold serve", "infer", 32)):
        print(f"fourfold OIP infer / HTTP floor (c=32): {by[('fourfold serve', 'infer', 32)] / floor:.0%}")


if __name__ == "__main__":
    main()
