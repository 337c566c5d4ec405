"""Overload benchmark: does a server keep its goodput when far more clients arrive than it can serve?

    .venv/bin/python bench/online/overload.py [--duration 3] [--warmup 0.5] [--workers 2] [--mlserver]

Model: a 200-tree XGBoost (depth 6) on 30 features; one-row requests rotating 1,000 distinct bodies
(OIP ``/v2/models/m/infer`` for fourfold and MLServer, the seed's ``/infer``). Servers, each with
``--workers`` processes and one model thread per worker:
  fourfold  ``fourfold serve`` with its defaults (admission adaptive, access log on), prediction
            cache off so every admitted request is scored
  seed      the seed's FastAPI + uvicorn code with the native XGBoost model (``seed_app.py``)
  MLServer  with ``--mlserver``: its XGBoost runtime (``peers.py``; its own venv, built once)

Load (``loadgen.c``, built here with ``cc``: one epoll thread; latency measured from when a request was
due, answers split into 2xx / 503 / other):
  capacity  closed loop, 32 connections: the goodput every other point is compared with
  closed    256 and 1024 connections, each sending again as soon as it is answered
  open      1x, 3x and 10x the server's capacity: requests due on a schedule whatever the answers (up
            to 4,096 connections; a request with no connection free is counted as not sent)
Floors (issue 13): goodput >= 90 % of capacity at 1024 connections and at 10x; admitted p99 <= the
100 ms budget; refusals p99 < 2 ms. The load generator runs on the same cores as the servers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

BUDGET_MS = 100.0
POINTS = ("c32", "c256", "c1024", "o1", "o3", "o10")


def build_loadgen() -> Path:
    source = HERE / "loadgen.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = Path.home() / ".cache" / "fourfold-bench" / f"loadgen-{digest}"
    if not binary.exists():
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise SystemExit("a C compiler is needed for the load generator: apt-get install gcc")
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([cc, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def make_model(home: Path) -> tuple[Path, np.ndarray]:
    """The model, registered as models:/m/production in ``home``; returns its booster's JSON and rows."""
    import pyarrow as pa
    from xgboost import XGBClassifier

    from fourfold import LocalRegistry, compile_model, save_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 30))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.normal(size=len(x)) > 0).astype(int)
    model = XGBClassifier(n_estimators=200, max_depth=6, n_jobs=1).fit(x, y)
    sample = pa.table({f"f{i}": x[:256, i] for i in range(30)})
    pkg = save_model(model, home / "pkg", name="m", sample=sample)
    LocalRegistry().register(pkg, name="m", aliases=["production"])
    compile_model("models:/m/production")
    booster = home / "model.json"
    model.get_booster().save_model(booster)
    return booster, x[-1000:]


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def load(
    binary: Path, port: int, path: str, bodies: Path, args: argparse.Namespace, **kw: float
) -> dict[str, Any]:
    cmd = [str(binary), "127.0.0.1", str(port), path, str(bodies), "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--timeout-ms", "2000"]  # fmt: skip
    for key, value in kw.items():
        cmd += [f"--{key}", str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def kernel() -> dict[str, int]:
    """TCP counters of this machine (Linux): retransmitted segments, accept-queue overflows, packets
    dropped by the CPUs' backlog - what a loopback load test loses to the kernel when the CPUs are full."""
    out: dict[str, int] = {}
    for name, keys in (("/proc/net/snmp", {"Tcp:RetransSegs": "retrans"}),
                       ("/proc/net/netstat", {"TcpExt:ListenOverflows": "overflows"})):  # fmt: skip
        try:
            lines = Path(name).read_text().splitlines()
        except OSError:
            return {}
        for head, values in zip(lines[::2], lines[1::2], strict=False):
            h, v = head.split(), values.split()
            for key, label in keys.items():
                prefix, field = key.split(":")
                if h[0] == prefix + ":" and field in h:
                    out[label] = int(v[h.index(field)])
    try:
        softnet = Path("/proc/net/softnet_stat").read_text().splitlines()
        out["softnet_drops"] = sum(int(line.split()[1], 16) for line in softnet)
    except OSError:
        pass
    return out


def server_latency(port: int, route: str) -> dict[float, float]:
    """fourfold's own request-latency histogram for ``route``: cumulative count by bucket bound."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("fourfold_request_seconds_bucket{") and f'route="{route}"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = out.get(float(le), 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def p99_between(before: dict[float, float], after: dict[float, float]) -> float:
    """The bucket bound (ms) under which 99 % of the requests between two scrapes finished; -1 if none."""
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return -1.0
    return next(le * 1000 for le in sorted(delta) if delta[le] >= 0.99 * total)


def scrape(port: int) -> dict[str, float]:
    """fourfold's admission metrics (summed over the workers)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            ("fourfold_rejected_total{", "fourfold_admission_limit ", "fourfold_queue_seconds_c")
        ):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured per point")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of load before each measurement")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mlserver", action="store_true", help="also MLServer (builds its venv once)")
    ap.add_argument("--only", default="", help="comma-separated servers: fourfold,seed,mlserver")
    ap.add_argument("--points", default=",".join(POINTS), help=f"comma-separated, of {','.join(POINTS)}")
    ap.add_argument(
        "--variant", action="append", default=[], metavar="LABEL:PYTHONPATH[:VAR=VALUE,...]",
        help="one more fourfold server: from another source tree and/or with other FOURFOLD_* settings",
    )  # fmt: skip
    args = ap.parse_args()
    points = [p for p in args.points.split(",") if p]
    if not set(points) <= set(POINTS) or "c32" not in points:
        raise SystemExit(f"--points: choose from {', '.join(POINTS)}; c32 (the capacity) is needed")
    binary = build_loadgen()
    home = Path(tempfile.mkdtemp(prefix="ff-overload-"))
    os.environ["FOURFOLD_HOME"] = str(home)
    from common import free_port

    print("training the model ...", file=sys.stderr)
    booster, rows = make_model(home)
    oip = home / "oip.txt"
    oip.write_text("".join(json.dumps({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64",
                                                   "data": r.tolist()}]}) + "\n" for r in rows))  # fmt: skip
    plain = home / "plain.txt"
    plain.write_text("".join(json.dumps({"features": r.tolist()}) + "\n" for r in rows))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEED_MODEL": str(booster), "SEED_STORE_FEATURES": "unused",
           "FOURFOLD_CACHE_SIZE": "0", "FOURFOLD_RELOAD_INTERVAL_S": "0"}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    fourfold = [sys.executable, "-m", "fourfold.cli.main", "serve", "models:/m/production", "--workers",
                str(args.workers), "--threads", "1"]  # fmt: skip
    uv = [sys.executable, "-m", "uvicorn", "--workers", str(args.workers), "--loop", "uvloop", "--http",
          "httptools", "--log-level", "warning", "--no-access-log", "--host", "127.0.0.1"]  # fmt: skip
    Server = tuple[str, Callable[[int], list[str]], dict[str, str], str, Path]
    servers: list[Server] = [
        ("fourfold", lambda port: [*fourfold, "--port", str(port)], {}, "/v2/models/m/infer", oip),
        ("seed", lambda port: [*uv, "seed_app:app", "--port", str(port)], {}, "/infer", plain),
    ]
    for spec in args.variant:
        label, pythonpath, *rest = spec.split(":")
        extra = dict(kv.split("=", 1) for kv in rest[0].split(",") if kv) if rest else {}
        if pythonpath:
            extra["PYTHONPATH"] = pythonpath
        run = lambda port: [*fourfold, "--port", str(port)]  # noqa: E731
        servers.append((label, run, extra, "/v2/models/m/infer", oip))
    if args.mlserver:
        import peers

        servers.append(("MLServer", lambda port: peers.mlserver_command(home, booster, port, free_port(),
                        free_port()), {}, "/v2/models/fraud/infer", oip))  # fmt: skip
    wanted = {w.strip().lower() for w in args.only.split(",") if w.strip()}

    rows_out: list[dict[str, Any]] = []
    for label, make, extra, path, bodies in servers:
        if wanted and label.lower() not in wanted:
            continue
        port = free_port()
        server_env = {**env, "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])}
        if "PYTHONPATH" in extra:
            server_env["PYTHONPATH"] = os.pathsep.join([str(HERE), extra.pop("PYTHONPATH")])
        server_env.update(extra)
        proc = subprocess.Popen(make(port), cwd=HERE, env=server_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_ready(
                f"http://127.0.0.1:{port}/v2/health/ready"
                if label != "seed"
                else f"http://127.0.0.1:{port}/docs"
            )
            time.sleep(2.0 if label == "MLServer" else 1.0)  # every worker up
            load(binary, port, path, bodies, argparse.Namespace(duration=1, warmup=0.2), connections=32)
            capacity = 0.0
            for point in points:
                counters, hist = kernel(), server_latency(port, "infer") if label != "seed" else {}
                if point.startswith("c"):
                    r = load(binary, port, path, bodies, args, connections=int(point[1:]))
                else:
                    rate = capacity * int(point[1:])
                    r = load(binary, port, path, bodies, args, connections=4096, rate=round(rate))
                r["kernel"] = {k: v - counters.get(k, 0) for k, v in kernel().items()}
                r["server_p99_ms"] = p99_between(hist, server_latency(port, "infer")) if hist else -1.0
                r["goodput"] = r["ok"] / r["duration_s"]
                if point == "c32":
                    capacity = r["goodput"]
                r.update(server=label, point=point, capacity=capacity)
                if label != "seed" and point in ("c1024", "o10"):
                    r["metrics"] = scrape(port)
                rows_out.append(r)
                print(f"  {label:<10} {point:<6} goodput {r['goodput']:>9,.0f}/s", file=sys.stderr)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    print(f"\noverload bench: XGBoost 200 trees x 30 features, one-row requests, {args.workers} workers x 1 "
          f"thread, {args.duration:g} s per point after {args.warmup:g} s, {os.cpu_count()} cores shared "
          "with the load generator")  # fmt: skip
    head = (f"{'server':<10} {'load':<12} {'offered/s':>10} {'goodput/s':>10} {'of cap':>7} {'adm p50':>8} "
            f"{'adm p99':>8} {'srv p99':>8} {'refused':>8} {'ref p50':>8} {'ref p99':>8} {'lost':>6} "
            f"{'retrans':>8}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows_out:
        answered = r["ok"] + r["refused"] + r["other"]
        kind = f"closed {r['connections']}" if r["mode"] == "closed" else f"open {r['point'][1:]}x"
        offered = r["sent"] / r["duration_s"]
        lost = r["errors"] + r["timeouts"] + r["not_sent"] + r["other"]
        share = r["refused"] / answered if answered else 0.0
        cap = r["goodput"] / r["capacity"] if r["capacity"] else 0.0

        def ms(v: float) -> str:
            return f"{v:8.1f}" if v >= 0 else f"{'-':>8}"

        print(f"{r['server']:<10} {kind:<12} {offered:>10,.0f} {r['goodput']:>10,.0f} {cap:>7.0%} "
              f"{ms(r['ok_p50_ms'])} {ms(r['ok_p99_ms'])} {ms(r['server_p99_ms'])} {share:>8.1%} "
              f"{ms(r['refused_p50_ms'])} {ms(r['refused_p99_ms'])} {lost:>6} "
              f"{r['kernel'].get('retrans', -1):>8}")  # fmt: skip
    print(
        "(ms; adm: answered 2xx, srv p99: fourfold's own histogram, a bucket bound; lost: other statuses, "
        "errors, 2 s timeouts, requests due with no connection free; retrans: TCP segments the kernel "
        "retransmitted during the point, any process)"
    )
    for r in rows_out:
        if r["kernel"].get("overflows") or r["kernel"].get("softnet_drops"):
            print(f"kernel {r['server']} {r['point']}: {r['kernel']}")
    for r in rows_out:
        if r.get("metrics"):
            shown = ", ".join(f"{k[9:]} {v:,.0f}" for k, v in sorted(r["metrics"].items()))
            print(f"{r['server']} after {r['point']}: {shown}")
    for r in rows_out:
        if r["point"] in ("c1024", "o10"):
            good = r["goodput"] >= 0.9 * r["capacity"]
            p99 = 0 <= r["ok_p99_ms"] <= BUDGET_MS
            ref = r["refused_p99_ms"] < 2.0
            print(
                f"floors {r['server']:<10} {r['point']:<6} goodput>=90%: {'yes' if good else 'NO'}  "
                f"admitted p99<=100ms: {'yes' if p99 else 'NO'}  refused p99<2ms: {'yes' if ref else 'NO'}"
            )


if __name__ == "__main__":
    main()
