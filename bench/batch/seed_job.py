"""The seed document's ``batch_predict.py``, as written, run as its own process by ``run.py`` for the
end-to-end comparison (a nightly job pays its Spark session and model load every night).

    MLFLOW_TRACKING_URI=sqlite:///... python seed_job.py OUT ID_COL FEATURES FILE...

The only changes: paths instead of ``s3://``, the ``feature_vector`` column assembled from the feature
columns (the seed reads a ready-made one), local[2] with the loopback address this machine needs, and
``models:/churn-model@production`` (MLflow 3 aliases; the seed's ``/production`` stage URI).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import mlflow.pyfunc
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

out, id_col, features, files = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:]

spark = (
    SparkSession.builder.appName("batch-inference").master("local[2]")
    .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false").getOrCreate()
)  # fmt: skip
spark.sparkContext.setLogLevel("ERROR")
# Load model (broadcast to all executors)
model_uri = "models:/churn-model@production"
model = mlflow.pyfunc.load_model(model_uri)
broadcast_model = spark.sparkContext.broadcast(model)


@pandas_udf("double")  # type: ignore[call-overload, untyped-decorator]
def predict_udf(features: pd.Series) -> pd.Series:
    m = broadcast_model.value
    X = pd.DataFrame(features.tolist())
    return pd.Series(m.predict(X))


# Read from data warehouse
df = spark.read.parquet(*["file://" + os.path.abspath(f) for f in files])
df = df.withColumn("feature_vector", F.array(*features))
# Generate predictions
predictions = df.withColumn("churn_score", predict_udf(df["feature_vector"]))
# Write back
predictions.select(id_col, "churn_score").write.mode("overwrite").parquet("file://" + os.path.abspath(out))
spark.stop()
