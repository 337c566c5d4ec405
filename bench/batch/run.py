"""Batch scoring, one command, one table: fourfold's local and Spark engines against the raw ceiling
(the package's runtime's vectorized predict over the table already in memory, no I/O), a
hand-written pyarrow read -> predict -> write loop, and the seed's Spark code (broadcast model + pandas
UDF) and Spark's own I/O floor (a no-op ``mapInArrow`` job over the same input and output) on local[2]
and on a standalone cluster - on the demo model and N rows of the demo's features split into parquet
files.

    .venv/bin/python bench/batch/run.py [--rows 2000000] [--files 16] [--repeat 2] [--no-spark]
        [--spark-cluster | --spark-master spark://host:7077]

``--spark-cluster`` starts a master and two 1-core workers on 127.0.0.1 from the pyspark package (as the
tests do, ``tests/sparkcluster.py``); ``--spark-master`` uses a running cluster (whose executors must
see this machine's paths: a shared filesystem). The floor, the seed and fourfold run alternated on the
same session of each master, and the two Spark floors are printed for each: fourfold >= 85 % of the
no-op job, >= 1.3x the seed's code.

Each figure is the best of ``--repeat`` runs (the machine is shared; the best run is the least disturbed).
Two timings: the job in a warm process (a live Spark session, the model loaded for the seed), and end
to end - each job as its own fresh process (``fourfold batch``; the seed's ``batch_predict.py`` as
written, ``seed_job.py``), which is what a scheduler runs every night.
Peak memory: the local engine run as ``fourfold batch`` in a child process on the input and on a tenth of
it (a tenth of the files, each the same size; a bounded-memory engine needs the same on both), RSS polled
from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def peak_rss_mib(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB of the process and its children) of running ``cmd``."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            total = 0
            for pid in [proc.pid, *_children(proc.pid)]:
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS"):
                            total += int(line.split()[1])
                except OSError:
                    pass
            peak[0] = max(peak[0], total)
            time.sleep(0.02)

    t0 = time.perf_counter()
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    done.set()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return elapsed, peak[0] / 1024


def _children(pid: int) -> list[int]:
    try:
        direct = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return direct + [g for c in direct for g in _children(c)]


def best(fn: Callable[[], float], repeat: int) -> float:
    return max(fn() for _ in range(repeat))


def write_files(table: pa.Table, root: Path, files: int) -> list[str]:
    root.mkdir(parents=True)
    step = -(-table.num_rows // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), root / f"part-{i:03d}.parquet")
    return sorted(str(p) for p in root.glob("*.parquet"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-spark", action="store_true", help="skip the Spark rows")
    cluster = ap.add_mutually_exclusive_group()
    cluster.add_argument("--spark-cluster", action="store_true", help="start a 2-worker standalone cluster")
    cluster.add_argument("--spark-master", help="a running standalone cluster's spark://host:port")
    ap.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", "native", "onnx"),
        help="auto: the runtime the package's compile recorded (what every pattern uses)",
    )
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ff-batch-bench-"))
    os.environ["FOURFOLD_HOME"] = str(home)

    from fourfold import Predictor, resolve
    from fourfold.batch import run_batch
    from fourfold.demo.data import generate_transactions
    from fourfold.demo.features import FEATURES, featurize
    from fourfold.demo.run import run_demo

    print("training the demo model and writing the input ...", file=sys.stderr)
    run_demo(events=200_000, out_dir=home / "demo")
    uri = "models:/fraud/production"
    pkg = resolve(uri)
    table = featurize(generate_transactions(args.rows, seed=1)).select(["event_id", *FEATURES])
    table = table.set_column(0, "event_id", table["event_id"].cast(pa.string()))
    files = write_files(table, home / "input", args.files)
    tenth = home / "input-tenth"  # a tenth of the input: a tenth of the files, each the same size
    tenth.mkdir()
    for f in files[: max(1, args.files // 10)]:
        os.link(f, tenth / Path(f).name)
    n = table.num_rows

    p = Predictor(pkg, runtime=args.runtime)  # auto: the runtime the package's compile chose
    runtime = p.runtime
    x = p.check(table).x

    def ceiling() -> float:
        t0 = time.perf_counter()
        p.score(x)
        return n / (time.perf_counter() - t0)

    def loop() -> float:  # a plain pyarrow read -> predict -> write loop, one process
        out = home / f"loop-{time.monotonic_ns()}"
        out.mkdir()
        t0 = time.perf_counter()
        for f in files:
            t = pq.read_table(f)
            scores = p.predict(t)["score"]
            pq.write_table(pa.table({"event_id": t["event_id"], "score": scores}), out / Path(f).name)
        return n / (time.perf_counter() - t0)

    def local() -> float:
        t0 = time.perf_counter()
        run_batch(
            model=uri,
            input=str(home / "input"),
            output=str(home / "out"),
            id_cols=("event_id",),
            runtime=runtime,
        )
        return n / (time.perf_counter() - t0)

    results: dict[str, float] = {}
    print("measuring ...", file=sys.stderr)
    results["raw ceiling"] = best(ceiling, args.repeat + 1)
    results["pyarrow loop"] = best(loop, args.repeat)
    results["local"] = best(local, args.repeat)

    cli = [
        sys.executable,
        "-m",
        "fourfold.cli.main",
        "batch",
        uri,
        "--id-cols",
        "event_id",
        "--runtime",
        runtime,
    ]
    env = {**os.environ, "FOURFOLD_HOME": str(home)}
    _, rss_tenth = peak_rss_mib([*cli, "-i", str(home / "input-tenth"), "-o", str(home / "o1")], env)
    _, rss_full = peak_rss_mib([*cli, "-i", str(home / "input"), "-o", str(home / "o2")], env)

    # end to end, as a nightly job runs: a fresh process each time (interpreter, imports, model load and,
    # for Spark, the session start included)
    cold: dict[str, float] = {}
    local_cli = [*cli, "-i", str(home / "input"), "-o", str(home / "o3")]
    cold["local"] = best(lambda: n / peak_rss_mib(local_cli, env)[0], args.repeat)

    floors: dict[str, str] = {}
    if not args.no_spark:
        sys.path.insert(0, str(Path(__file__).parent))
        from spark_bench import compare, floor_ratios, mlflow_registry, stop_session

        names = list(FEATURES)
        runs = compare(files, uri, names, "event_id", "local[2]", args.repeat)
        for key in ("noop", "seed", "fourfold"):
            results[f"{key} spark"] = max(runs[key])
        floors["local[2]"] = floor_ratios(*(results[f"{k} spark"] for k in ("noop", "seed", "fourfold")))
        stop_session()
        with contextlib.ExitStack() as stack:
            master = args.spark_master
            if args.spark_cluster:
                sys.path.insert(0, str(Path(__file__).parents[2] / "tests"))
                from sparkcluster import standalone_cluster

                print("starting a standalone cluster (a master, two 1-core workers) ...", file=sys.stderr)
                master = stack.enter_context(standalone_cluster(home / "cluster", workers=2)).url
            if master:
                runs = compare(files, uri, names, "event_id", master, args.repeat)
                for key in ("noop", "seed", "fourfold"):
                    results[f"{key} cluster"] = max(runs[key])
                floors[master] = floor_ratios(
                    *(results[f"{k} cluster"] for k in ("noop", "seed", "fourfold"))
                )
                stop_session()
        seed_env = {
            **env,
            "MLFLOW_TRACKING_URI": mlflow_registry(pkg),
            "MLFLOW_REGISTRY_URI": mlflow_registry(pkg),
        }
        seed_job = str(Path(__file__).with_name("seed_job.py"))
        seed_cmd = [sys.executable, seed_job, str(home / "o4"), "event_id", ",".join(FEATURES), *files]
        cold["seed spark"] = best(lambda: n / peak_rss_mib(seed_cmd, seed_env)[0], args.repeat)
        spark_cli = [*cli, "-i", str(home / "input"), "-o", str(home / "o5"), "--engine", "spark",
                     "--spark-master", "local[2]"]  # fmt: skip
        cold["fourfold spark"] = best(lambda: n / peak_rss_mib(spark_cli, env)[0], args.repeat)

    raw, seed, cold_seed = results["raw ceiling"], results.get("seed spark"), cold.get("seed spark")
    print(
        f"\nbatch bench: {n:,} rows x {len(FEATURES)} features, {args.files} parquet files, "
        f"{os.cpu_count()} cores, demo XGBoost model, runtime {runtime}, best of {args.repeat}"
    )
    print(f"| {'what':<52} | {'rows/s':>10} | {'of ceiling':>10} | {'vs seed Spark':>13} "
          f"| {'end to end':>10} | {'vs seed':>7} |")  # fmt: skip
    print(f"|{'-' * 54}|{'-' * 12}|{'-' * 12}|{'-' * 15}|{'-' * 12}|{'-' * 9}|")
    labels = {
        "raw ceiling": f"raw ceiling ({runtime} predict, in memory, no I/O)",
        "pyarrow loop": "hand-written pyarrow read -> predict -> write loop",
        "local": "fourfold local engine (1 process, all cores)",
        "noop spark": "Spark I/O floor (no-op mapInArrow, local[2])",
        "seed spark": "seed's Spark code (broadcast + pandas UDF, local[2])",
        "fourfold spark": "fourfold Spark engine (mapInArrow, local[2])",
        "noop cluster": "Spark I/O floor (no-op mapInArrow, cluster)",
        "seed cluster": "seed's Spark code (cluster)",
        "fourfold cluster": "fourfold Spark engine (cluster)",
    }
    for key, value in results.items():
        ref = results.get("seed cluster") if key.endswith("cluster") else seed  # the seed on the same master
        vs = f"{value / ref:.1f}x" if ref else "-"
        e2e = f"{cold[key]:>10,.0f}" if key in cold else f"{'-':>10}"
        e2e_vs = f"{cold[key] / cold_seed:.1f}x" if key in cold and cold_seed else "-"
        print(
            f"| {labels[key]:<52} | {value:>10,.0f} | {value / raw:>10.0%} | {vs:>13} | {e2e} | {e2e_vs:>7} |"
        )
    print(
        "(rows/s: the job in a warm process / Spark session; end to end: a fresh process per run, as a "
        "nightly job runs)"
    )
    for master, line in floors.items():
        print(f"Spark floors on {master}: {line}")
    print(
        f"\nlocal engine peak RSS (fourfold batch, whole process): {rss_full:,.0f} MiB on {n:,} rows, "
        f"{rss_tenth:,.0f} MiB on a tenth of the files (x{rss_full / rss_tenth:.2f} for 10x the input)"
    )


if __name__ == "__main__":
    main()
