"""Spark batch scoring: the seed document's Spark + MLflow + pandas UDF job against fourfold's Spark engine,
both on ``local[2]`` (for ``run.py``; ``__main__`` is a quick check on ~200k rows).

    .venv/bin/python bench/batch/spark_bench.py [--rows 200000] [--files 4] [--repeat 3]

The seed's job, reproduced as written: load the model on the driver, ``broadcast`` it, a ``pandas_udf``
returning a Series (``pd.DataFrame(features.tolist())`` -> ``m.predict(X)``), ``withColumn``, write parquet.
Two stand-ins: ``mlflow.pyfunc.load_model(uri)`` becomes the package's native model (for XGBoost the
``Booster`` from its model file, scored the way MLflow's pyfunc wrapper scores a Booster:
``booster.predict(xgb.DMatrix(X))``; other flavors: ``predict_raw``), and the seed's ready-made
``feature_vector`` column is assembled from the feature columns with ``F.array``. Both figures are rows/s
around read -> score -> write on a warm session (the session start and the seed's model load are outside
the timing; fourfold's figure includes resolving the model, its checks and the commit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd  # module level: pandas_udf resolves the UDF's type hints in this module's globals
import pyarrow.parquet as pq

MASTER = "local[2]"


def _session() -> Any:
    from fourfold.batch.spark import spark_session

    spark, _ = spark_session(MASTER)
    return spark


_REGISTRY: dict[str, str] = {}
_PYFUNC: dict[str, Any] = {}


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """MLflow pointed at ``uri`` for the block; fourfold's own ``models:/`` URIs stay local after it."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)  # exports MLFLOW_TRACKING_URI
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def mlflow_registry(pkg: Any) -> str:
    """The tracking URI of a throwaway MLflow registry (SQLite) holding the package's XGBoost booster as
    the seed's ``churn-model`` with alias ``production``. Cached per package (outside any timing)."""
    key = str(pkg.path)
    if key not in _REGISTRY:
        import logging

        import mlflow
        import mlflow.xgboost

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        root = Path(tempfile.mkdtemp(prefix="seed-mlflow-"))
        uri = f"sqlite:///{root / 'mlflow.db'}"
        with _tracking(uri):
            exp = mlflow.create_experiment("seed", artifact_location=(root / "artifacts").as_uri())
            with mlflow.start_run(experiment_id=exp):
                info = mlflow.xgboost.log_model(
                    pkg.load_native().booster, name="model", registered_model_name="churn-model"
                )
            mlflow.MlflowClient().set_registered_model_alias(
                "churn-model", "production", info.registered_model_version
            )
        _REGISTRY[key] = uri
    return _REGISTRY[key]


def mlflow_pyfunc(pkg: Any) -> Any:
    """``mlflow.pyfunc.load_model("models:/churn-model@production")`` from :func:`mlflow_registry` - what
    the seed's driver holds and broadcasts."""
    key = str(pkg.path)
    if key not in _PYFUNC:
        import mlflow.pyfunc

        with _tracking(mlflow_registry(pkg)):
            _PYFUNC[key] = mlflow.pyfunc.load_model("models:/churn-model@production")
    return _PYFUNC[key]


def seed_spark(files: list[str], model_uri: str, feature_names: list[str], id_col: str = "user_id") -> float:
    """The seed's Spark job over ``files`` (``id_col`` - the seed's ``user_id`` - and ``feature_names``);
    rows/s."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.functions import pandas_udf

    from fourfold.batch.spark import _uri
    from fourfold.registry.resolve import resolve

    spark = _session()
    # Load model (broadcast to all executors): the seed's mlflow.pyfunc.load_model on a real MLflow
    # registry holding the same XGBoost booster
    model = mlflow_pyfunc(resolve(model_uri))
    broadcast_model = spark.sparkContext.broadcast(model)

    @pandas_udf("double")  # type: ignore[call-overload, untyped-decorator]  # pyspark's stubs lack the type-hint form
    def predict_udf(features: pd.Series) -> pd.Series:
        m = broadcast_model.value
        X = pd.DataFrame(features.tolist())  # the seed's name
        return pd.Series(m.predict(X))

    out = tempfile.mkdtemp(prefix="seed-spark-")
    rows = sum(int(pq.ParquetFile(f).metadata.num_rows) for f in files)
    try:
        t0 = time.perf_counter()
        # Read from data warehouse
        df = spark.read.parquet(*[_uri(f) for f in files])
        df = df.withColumn("feature_vector", F.array(*feature_names))
        # Generate predictions
        predictions = df.withColumn("churn_score", predict_udf(df["feature_vector"]))
        # Write back
        predictions.select(id_col, "churn_score").write.mode("overwrite").parquet(_uri(out))
        elapsed = time.perf_counter() - t0
    finally:
        broadcast_model.destroy()
        shutil.rmtree(out, ignore_errors=True)
    return rows / elapsed


def fourfold_spark(files: list[str], model_uri: str, id_col: str) -> float:
    """``run_batch(..., engine="spark", spark_master="local[2]")`` over ``files``; rows/s."""
    from fourfold.batch import run_batch

    _session()
    work = Path(tempfile.mkdtemp(prefix="fourfold-spark-"))
    try:
        parents = {str(Path(f).parent) for f in files}
        listed = {str(p) for p in Path(next(iter(parents))).iterdir()} if len(parents) == 1 else set()
        if listed == {str(Path(f)) for f in files}:
            source = next(iter(parents))
        else:  # just these files: a directory of links to them
            source = str(work / "input")
            os.mkdir(source)
            for i, f in enumerate(files):
                os.symlink(os.path.abspath(f), os.path.join(source, f"{i:05d}-{Path(f).name}"))
        t0 = time.perf_counter()
        summary = run_batch(model=model_uri, input=source, output=str(work / "out"), id_cols=(id_col,),
                            engine="spark", spark_master=MASTER)  # fmt: skip
        elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary.rows_in / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ff-spark-bench-"))
    os.environ["FOURFOLD_HOME"] = str(home)

    import numpy as np
    import pyarrow as pa
    import xgboost as xgb

    from fourfold import LocalRegistry, save_model

    rng = np.random.default_rng(0)
    names = [f"x{i}" for i in range(args.features)]
    x = rng.standard_normal((20_000, args.features))
    y = (x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + rng.standard_normal(len(x)) > 0.3).astype(int)
    model = xgb.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=2, random_state=0).fit(x, y)
    sample = pa.table({n: x[:256, i] for i, n in enumerate(names)})
    pkg = save_model(model, home / "pkg", name="churn", sample=sample)
    LocalRegistry().register(pkg, name="churn", aliases=["production"])
    uri = "models:/churn/production"

    src = home / "input"
    src.mkdir()
    step = -(-args.rows // args.files)
    files = []
    for i in range(args.files):
        n = min(step, args.rows - i * step)
        cols: dict[str, Any] = {"user_id": [f"u{i}-{j}" for j in range(n)]}
        cols |= {name: rng.standard_normal(n) for name in names}
        files.append(str(src / f"part-{i:03d}.parquet"))
        pq.write_table(pa.table(cols), files[-1])

    _session()
    warm = [files[0]]  # the first jobs of a JVM are slow (JIT, Python workers): warm both paths up
    seed_spark(warm, uri, names)
    fourfold_spark(warm, uri, "user_id")
    seeds, ours = [], []
    for _ in range(args.repeat):  # alternated, the median of each: a 2-core machine is noisy
        seeds.append(seed_spark(files, uri, names))
        ours.append(fourfold_spark(files, uri, "user_id"))
    seed, mine = float(np.median(seeds)), float(np.median(ours))
    print(f"\nspark bench: {args.rows:,} rows x {args.features} features, {args.files} files, {MASTER}, "
          f"median of {args.repeat}")  # fmt: skip
    print(f"{'seed (broadcast model + pandas_udf)':<44} {seed:>12,.0f} rows/s")
    print(f"{'fourfold spark engine (mapInArrow)':<44} {mine:>12,.0f} rows/s  ({mine / seed:.2f}x)")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
